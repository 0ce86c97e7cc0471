"""Accuracy metrics over n samples per problem: Pass@1, unbiased Pass@k, lengths, breakdowns."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k) for n samples, c correct.

    Computed as the product form 1 - prod_{i=n-c+1..n} (1 - k/i), which never forms the large
    binomials; it is 1 when fewer than k samples are wrong.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"pass_at_k: {name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"pass_at_k: n={n} must be >= 1")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c={c} must lie in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k={k} must lie in [1, n={n}]")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_k_values(n: int) -> list[int]:
    """The k reported for n samples: powers of two up to n, plus 16 (the paper's Pass@16) when n >= 16."""
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 16 and 16 not in ks:
        ks.append(16)
    return sorted(ks)


def _accuracy_block(correct_by_problem: Mapping[str, Sequence[bool]], n: int) -> dict[str, float]:
    out: dict[str, float] = {"num_problems": len(correct_by_problem)}
    if not correct_by_problem:
        return out
    counts = [int(sum(bool(x) for x in v)) for v in correct_by_problem.values()]
    for k in pass_k_values(n):
        out[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for c in counts]))
    return out


def summarize(samples: Iterable[Mapping], n: int, breakdown_keys: Sequence[str] = ()) -> dict:
    """Metrics of a benchmark from its graded samples.

    Each sample has ``problem_id``, ``correct`` (bool), ``tokens`` (response length) and
    ``finish_reason`` ("length" = truncated at max tokens), plus ``meta`` holding the breakdown
    fields. Every problem must have exactly ``n`` samples (the harness guarantees it).
    Pass@1 equals the mean correctness over all samples and problems.
    """
    by_problem: dict[str, list[bool]] = defaultdict(list)
    meta_by_problem: dict[str, Mapping] = {}
    tokens, truncated = [], []
    for s in samples:
        pid = str(s["problem_id"])
        by_problem[pid].append(bool(s["correct"]))
        meta_by_problem[pid] = s.get("meta") or {}
        tokens.append(int(s["tokens"]))
        truncated.append(s.get("finish_reason") == "length")
    bad = {pid: len(v) for pid, v in by_problem.items() if len(v) != n}
    if bad:
        example = next(iter(bad.items()))
        raise ValueError(f"summarize: {len(bad)} problems do not have n={n} samples (e.g. {example[0]!r}: {example[1]})")
    metrics: dict = {"n_samples": n, **_accuracy_block(by_problem, n)}
    metrics["mean_response_tokens"] = float(np.mean(tokens)) if tokens else 0.0
    metrics["truncation_rate"] = float(np.mean(truncated)) if truncated else 0.0
    breakdown: dict[str, dict[str, dict]] = {}
    for key in breakdown_keys:
        groups: dict[str, dict[str, list[bool]]] = defaultdict(dict)
        for pid, values in by_problem.items():
            value = meta_by_problem[pid].get(key)
            if value is None:
                continue
            groups[str(value)][pid] = values
        if groups:
            breakdown[key] = {g: _accuracy_block(groups[g], n) for g in sorted(groups, key=_natural_key)}
    if breakdown:
        metrics["breakdown"] = breakdown
    return metrics


def _natural_key(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)
