"""Small-sample statistics over seeds for ``python -m apmpo_openrlhf.compare``.

* :func:`t_interval`: mean and the 95% Student-t confidence half-width over seeds (the bands of the
  comparison's curves).
* :func:`paired_bootstrap_ci`: percentile bootstrap CI of the mean paired difference (seeds
  resampled with replacement; a seed's two runs share the base model, the warm start and the split).
* :func:`sign_flip_test`: the exact two-sided sign-flip (paired permutation) test of a zero mean
  difference: every one of the 2^n sign patterns (n <= 20). Its smallest possible p-value is
  2 / 2^n (0.0625 for 5 seeds, 0.03125 for 6): with 5 seeds it can never reach p < 0.05.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

# t_{0.975, df} for df = 1..30; beyond that the normal quantile is within 2% of it.
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.960


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval); half-width 0 for one value, NaNs ignored."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), 0.0
    return float(v.mean()), float(t975(v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """(mean of a - b, lower, upper): percentile bootstrap over the pairs (a[i], b[i])."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(d.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def sign_flip_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided p-value of the paired sign-flip test of mean(a - b) = 0."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = d.size
    if n == 0:
        return math.nan
    if n > 20:
        raise ValueError(f"sign_flip_test: n={n} pairs; the exact test enumerates 2^n patterns (n <= 20)")
    observed = abs(d.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    stats = np.abs((signs * d).mean(axis=1))
    return float(np.mean(stats >= observed - 1e-12))


def min_sign_flip_p(n: int) -> float:
    """The smallest p-value the exact test can give with n pairs (all differences of one sign)."""
    return 2.0 / 2**n if n else math.nan


def compare_pair(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict:
    """Paired comparison of two methods' per-seed values (same seeds, same order)."""
    mean, lo, hi = paired_bootstrap_ci(a, b, seed=seed)
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return {"n": int(d.size), "mean_diff": mean, "ci_low": lo, "ci_high": hi, "p_sign_flip": sign_flip_test(a, b),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}
