"""APMPO (Adaptive Power-Mean Policy Optimization) on OpenRLHF, with GRPO, DAPO and GMPO baselines."""

__version__ = "0.1.0"
