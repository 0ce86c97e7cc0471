"""Evaluation harness: sample a model on the paper's nine benchmarks, grade with
:mod:`apmpo_openrlhf.rewards`, and report the paper's Table 1 / Table 4 / Table 5 layouts.

Entry points: ``python -m evaluation.run``, ``python -m evaluation.report`` and
``python -m evaluation.diversity`` (see docs/evaluation.md).
"""
