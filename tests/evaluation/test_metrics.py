"""Pass@k against brute-force enumeration, and the per-benchmark summary."""

from __future__ import annotations

import itertools
import random

import pytest

from evaluation.metrics import pass_at_k, pass_k_values, summarize


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c correct) holding at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 11))
def test_pass_at_k_matches_enumeration_of_all_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_1_is_fraction_correct_and_pass_at_16_large_n():
    rng = random.Random(7)
    for _ in range(50):
        n = rng.randint(16, 64)
        c = rng.randint(0, n)
        assert pass_at_k(n, c, 1) == pytest.approx(c / n)
        # 1 - C(n-c,16)/C(n,16) with exact integers
        from math import comb

        assert pass_at_k(n, c, 16) == pytest.approx(1 - comb(n - c, 16) / comb(n, 16), abs=1e-12)


@pytest.mark.parametrize("args, message", [
    ((0, 0, 1), "n=0"), ((4, 5, 1), "c=5"), ((4, -1, 1), "c=-1"), ((4, 2, 0), "k=0"), ((4, 2, 5), "k=5"),
    ((4.0, 2, 1), "n must be an int"),
])
def test_pass_at_k_rejects_bad_arguments(args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        pass_at_k(*args)


def test_pass_k_values():
    assert pass_k_values(1) == [1]
    assert pass_k_values(6) == [1, 2, 4]
    assert pass_k_values(16) == [1, 2, 4, 8, 16]
    assert pass_k_values(24) == [1, 2, 4, 8, 16]
    assert pass_k_values(64) == [1, 2, 4, 8, 16, 32, 64]


def test_summarize_on_random_samples():
    rng = random.Random(3)
    n = 8
    samples, counts = [], {}
    for p in range(25):
        pid = f"p{p}"
        correct = [rng.random() < rng.random() for _ in range(n)]
        counts[pid] = sum(correct)
        for i, ok in enumerate(correct):
            samples.append({"problem_id": pid, "sample_index": i, "correct": ok, "tokens": rng.randint(1, 100),
                            "finish_reason": rng.choice(["stop", "length"]),
                            "meta": {"level": p % 3, "subject": "A" if p < 10 else "B"}})
    m = summarize(samples, n, ("level", "subject", "missing"))
    assert m["num_problems"] == 25 and m["n_samples"] == n
    assert m["pass@1"] == pytest.approx(sum(s["correct"] for s in samples) / len(samples))
    for k in (2, 4, 8):
        assert m[f"pass@{k}"] == pytest.approx(sum(pass_at_k(n, c, k) for c in counts.values()) / 25)
    assert "pass@16" not in m
    assert m["mean_response_tokens"] == pytest.approx(sum(s["tokens"] for s in samples) / len(samples))
    assert m["truncation_rate"] == pytest.approx(sum(s["finish_reason"] == "length" for s in samples) / len(samples))
    assert set(m["breakdown"]) == {"level", "subject"}
    sub_a = [s for s in samples if s["meta"]["subject"] == "A"]
    assert m["breakdown"]["subject"]["A"]["num_problems"] == 10
    assert m["breakdown"]["subject"]["A"]["pass@1"] == pytest.approx(sum(s["correct"] for s in sub_a) / len(sub_a))
    assert list(m["breakdown"]["level"]) == ["0", "1", "2"]


def test_summarize_rejects_incomplete_problems():
    samples = [{"problem_id": "a", "sample_index": 0, "correct": True, "tokens": 3, "finish_reason": "stop"}]
    with pytest.raises(ValueError, match="do not have n=2 samples"):
        summarize(samples, 2)
