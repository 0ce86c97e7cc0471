"""Edge cases (finite values and gradients), low-precision inputs, the KL term, the metrics and
every ValueError of the algorithm core."""

from __future__ import annotations

import math

import pytest
import torch

from apmpo_openrlhf.algorithms import (
    adaptive_parameters,
    apmpo_loss,
    dapo_loss,
    get_policy_loss,
    gmpo_loss,
    group_advantages,
    grpo_loss,
    kl_penalty,
    kl_per_token,
)

F64 = torch.float64
LOSSES = ["grpo", "dapo", "gmpo", "apmpo"]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def base_inputs(seed: int, n: int = 8, t: int = 24):
    g = torch.Generator().manual_seed(seed)
    old = -4.0 * torch.rand(n, t, generator=g, dtype=F64) - 0.01
    new = old + 0.3 * torch.randn(n, t, generator=g, dtype=F64)
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    adv = torch.randn(n, generator=g, dtype=F64)
    return new, old, adv, mask


def call(name, new, old, adv, mask, p=0.6, **divisor):
    kwargs = {"p": p, "eps_high": 0.3} if name == "apmpo" else {}
    return get_policy_loss(name)(new, old, adv, mask, **kwargs, **divisor)


def build_case(case: str, dtype: torch.dtype, seed: int):
    """Returns (new, old, adv, mask, p, rows_without_gradient)."""
    new, old, adv, mask = base_inputs(seed)
    p = 0.6
    dead_rows: list[int] = []
    if case == "zero_advantage":
        adv[::2] = 0.0
        dead_rows = list(range(0, 8, 2))
    elif case == "all_equal_group":
        rewards = torch.tensor([1.0, 1, 1, 1, 0, 1, 0, 0], dtype=F64)
        adv = group_advantages(rewards, 4)
        dead_rows = [0, 1, 2, 3]
    elif case == "fully_masked":
        mask[3] = False
        dead_rows = [3]
    elif case == "log_ratio_50":
        g = torch.Generator().manual_seed(seed + 1)
        sign = torch.where(torch.rand(new.shape, generator=g) < 0.5, -1.0, 1.0).to(F64)
        if dtype == torch.float16:
            # An unclipped ratio e^50 (A < 0, r > 1) has a true gradient ~ |A| e^50 / (N |o|), which
            # fp16 cannot hold (max 65504): keep fp16 to the ratios the clip bounds, whose gradient
            # is exactly zero (A > 0, r = e^50; A < 0, r = e^-50), plus A > 0, r = e^-50.
            sign[adv < 0] = -1.0
        pick = torch.rand(new.shape, generator=g) < 0.3
        new = torch.where(pick, old + 50.0 * sign, new)
    elif case == "p_1e-3":
        p = 1e-3
    elif case == "p_1":
        p = 1.0
    return new.to(dtype), old.to(dtype), adv, mask, p, dead_rows


CASES = ["zero_advantage", "all_equal_group", "fully_masked", "log_ratio_50", "p_1e-3", "p_1"]


GRID = [(n, c) for n in LOSSES for c in CASES if n == "apmpo" or not c.startswith("p_")]  # p is APMPO's


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,case", GRID)
def test_finite_value_and_gradient(name, case, dtype):
    new, old, adv, mask, p, dead_rows = build_case(case, dtype, seed=LOSSES.index(name) + 10 * CASES.index(case))
    leaf = new.clone().requires_grad_(True)
    loss, metrics = call(name, leaf, old, adv.to(dtype), mask, p=p)
    assert loss.dtype == (F64 if dtype == F64 else torch.float32)  # accumulated in fp32 (fp64 stays)
    loss.backward()
    assert torch.isfinite(loss)
    assert leaf.grad.dtype == dtype
    assert bool(torch.isfinite(leaf.grad).all())
    assert bool((leaf.grad[~mask] == 0).all())  # padding never gets a gradient
    for row in dead_rows:
        assert bool((leaf.grad[row] == 0).all()), f"row {row} must get no gradient"
    for key, value in metrics.items():
        assert torch.isfinite(value), key
    if case not in ("zero_advantage", "all_equal_group", "fully_masked"):
        assert leaf.grad.abs().sum() > 0  # something still learns


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", LOSSES)
def test_low_precision_inputs_are_accumulated_in_fp32(name, dtype):
    """The loss of bf16/fp16 inputs equals the float64 loss of the same (rounded) values to fp32
    accuracy: a bf16 accumulation would be off by ~1e-2."""
    new, old, adv, mask = base_inputs(42, n=16, t=512)
    new_lp, old_lp, adv_lp = new.to(dtype), old.to(dtype), adv.to(dtype)
    loss_lp, _ = call(name, new_lp, old_lp, adv_lp, mask)
    loss_64, _ = call(name, new_lp.to(F64), old_lp.to(F64), adv_lp.to(F64), mask)
    torch.testing.assert_close(loss_lp.to(F64), loss_64, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("p", [1e-3, 0.05, 0.449, 1.0])
@pytest.mark.parametrize("regime", ["small_spread", "dominant_token"])
def test_apmpo_fp32_matches_fp64_at_long_sequences(p, regime):
    """fp32 APMPO at 4096 tokens stays within ~1e-5 of fp64, also at small p (where a naive
    (logsumexp(p log x) - log n) / p cancels) and when one token dominates the power mean."""
    g = torch.Generator().manual_seed(int(p * 1e4))
    n, t = 8, 4096
    old = -3.0 * torch.rand(n, t, generator=g, dtype=F64)
    new = old + 0.1 * torch.randn(n, t, generator=g, dtype=F64)
    adv = torch.randn(n, generator=g, dtype=F64)
    if regime == "dominant_token":
        adv = -adv.abs()  # A < 0: x = max(r, rho) is unbounded above
        new[:, 7] = old[:, 7] + 30.0
    mask = torch.ones(n, t, dtype=torch.bool)
    leaf32 = new.float().requires_grad_(True)
    leaf64 = new.clone().requires_grad_(True)
    l32, _ = apmpo_loss(leaf32, old.float(), adv.float(), mask, p=p, eps_high=0.3)
    l64, _ = apmpo_loss(leaf64, old, adv, mask, p=p, eps_high=0.3)
    l32.backward()
    l64.backward()
    assert abs(float(l32.detach()) - float(l64.detach())) <= 1e-5 * abs(float(l64.detach()))
    scale = leaf64.grad.abs().max()
    assert float((leaf32.grad.double() - leaf64.grad).abs().max()) <= 1e-5 * float(scale)


def test_fully_masked_row_counts_in_n():
    new, old, adv, mask = base_inputs(3)
    mask[5] = False
    for name in ("grpo", "gmpo", "apmpo"):
        full, _ = call(name, new, old, adv, mask)
        keep = [i for i in range(8) if i != 5]
        rest, _ = call(name, new[keep], old[keep], adv[keep], mask[keep], num_sequences=8)
        torch.testing.assert_close(full, rest, rtol=1e-14, atol=1e-15)


def test_metrics_report_clip_fractions_ratio_and_parameters():
    new, old, adv, mask = base_inputs(4)
    p = torch.linspace(0.2, 0.9, 8, dtype=F64)
    _, m = apmpo_loss(new, old, adv, mask, p=p, eps_high=0.25, eps_low=0.15)
    log_r = (new - old)[mask]
    a = adv.unsqueeze(-1).expand_as(new)[mask]
    high = ((a > 0) & (log_r > math.log(1.25))).double().mean()
    low = ((a < 0) & (log_r < math.log(0.85))).double().mean()
    torch.testing.assert_close(m["clip_frac_high"], high)
    torch.testing.assert_close(m["clip_frac_low"], low)
    torch.testing.assert_close(m["ratio_mean"], torch.exp(log_r).mean())
    torch.testing.assert_close(m["log_ratio_min"], log_r.min())
    torch.testing.assert_close(m["log_ratio_max"], log_r.max())
    torch.testing.assert_close(m["p"], p.mean())
    torch.testing.assert_close(m["eps_high"], torch.tensor(0.25, dtype=F64))
    assert float(high) > 0 and float(low) > 0


# ------------------------------------------------------------------------------- KL
def ref_kl(new, ref, mask, estimator, aggregation):
    """Literal estimators with ratio q = pi_ref / pi_theta: k1 = -log q, k2 = (log q)^2 / 2,
    k3 = q - 1 - log q; averaged per sequence then over N, or over all tokens."""
    per_seq, tokens, total = [], 0, new.new_zeros(())
    for i in range(new.shape[0]):
        m = mask[i]
        log_q = ref[i][m] - new[i][m]
        q = torch.exp(log_q)
        k = {"k1": -log_q, "k2": 0.5 * log_q**2, "k3": q - 1 - log_q}[estimator]
        per_seq.append(k.mean() if int(m.sum()) else new.new_zeros(()))
        total = total + k.sum()
        tokens += int(m.sum())
    if aggregation == "token":
        return total / tokens
    return torch.stack(per_seq).sum() / new.shape[0]


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_penalty_matches_literal_estimators(estimator, aggregation):
    new, ref, _, mask = base_inputs(5)
    mask[2] = False  # an empty sequence contributes 0
    leaf = new.clone().requires_grad_(True)
    kl = kl_penalty(leaf, ref, mask, estimator=estimator, aggregation=aggregation)
    (g,) = torch.autograd.grad(kl, leaf)
    leaf_ref = new.clone().requires_grad_(True)
    expected = ref_kl(leaf_ref, ref, mask, estimator, aggregation)
    (g_ref,) = torch.autograd.grad(expected, leaf_ref)
    torch.testing.assert_close(kl, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)
    if estimator == "k3":
        assert float(kl.detach()) > 0  # k3 is non-negative and 0 only at pi = pi_ref


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_kl_penalty_micro_batches_sum_to_full_batch(aggregation):
    new, ref, _, mask = base_inputs(6)
    full = kl_penalty(new, ref, mask, aggregation=aggregation)
    divisor = {"num_sequences": 8} if aggregation == "sequence" else {"num_tokens": int(mask.sum())}
    parts = sum(kl_penalty(new[s], ref[s], mask[s], aggregation=aggregation, **divisor)
                for s in (slice(0, 3), slice(3, 8)))
    torch.testing.assert_close(parts, full, rtol=1e-13, atol=1e-15)


def test_kl_per_token_is_exact_beyond_openrlhfs_clamp():
    """k3 has no value clamp (OpenRLHF's estimator caps it at 10, i.e. for d < -2.53, with gradient
    0 there): at d = log pi - log pi_ref = -3 the value is e^3 - 4 and the gradient 1 - e^3; only
    |d| > 20 is clamped (exp stays finite), and padding is exactly 0 whatever it holds."""
    d = torch.tensor([[-3.0, -6.0, 0.5, 25.0, float("nan")]], dtype=F64)
    mask = torch.tensor([[True, True, True, True, False]])
    leaf = d.clone().requires_grad_(True)
    kl = kl_per_token(leaf, torch.zeros_like(d), mask)
    kl.sum().backward()
    e3, e6 = math.exp(3.0), math.exp(6.0)
    want = [e3 - 4.0, e6 - 7.0, math.exp(-0.5) - 0.5, math.exp(-20.0) - 1.0 + 20.0, 0.0]
    assert kl.detach()[0].tolist() == pytest.approx(want, rel=1e-12)
    assert leaf.grad[0, :3].tolist() == pytest.approx([1 - e3, 1 - e6, 1 - math.exp(-0.5)], rel=1e-12)
    assert leaf.grad[0, 3:].tolist() == [0.0, 0.0]  # clamped, and padding


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_kl_penalty_finite_at_extreme_log_ratios(dtype):
    new, ref, _, mask = base_inputs(7)
    new = ref + 50.0 * torch.sign(torch.randn(new.shape, generator=torch.Generator().manual_seed(1), dtype=F64))
    leaf = new.to(dtype).requires_grad_(True)
    kl = kl_penalty(leaf, ref.to(dtype), mask)
    kl.backward()
    assert torch.isfinite(kl) and bool(torch.isfinite(leaf.grad).all())
    assert kl.dtype == torch.float32


# ------------------------------------------------------------------------ ValueErrors
R = torch.tensor([1.0, 0.0, 1.0, 0.0])
NEW, OLD, ADV, MASK = (x.float() if x.dtype == F64 else x for x in base_inputs(8, n=4, t=6))

ERRORS = [
    ("eps_min", lambda: adaptive_parameters(R, 2, eps_min=0.5, eps_max=0.3)),
    ("gamma", lambda: adaptive_parameters(R, 2, gamma=-0.1)),
    ("p_fixed", lambda: adaptive_parameters(R, 2, p_schedule="fixed", p_fixed=0.0)),
    ("p_fixed", lambda: adaptive_parameters(R, 2, p_schedule="fixed", p_fixed=1.5)),
    ("p_min", lambda: adaptive_parameters(R, 2, p_min=0.0)),
    ("p_schedule", lambda: adaptive_parameters(R, 2, p_schedule="cosine")),
    ("eps_schedule", lambda: adaptive_parameters(R, 2, eps_schedule="sigmoid")),
    ("fss", lambda: adaptive_parameters(R, 2, fss="sigma")),
    ("scope", lambda: adaptive_parameters(R, 2, scope="epoch")),
    ("delta", lambda: adaptive_parameters(R, 2, delta=0.0)),
    ("group_size", lambda: adaptive_parameters(R, 3)),
    ("group_size", lambda: group_advantages(R, 3)),
    ("group_size", lambda: group_advantages(R, 0)),
    ("rewards", lambda: group_advantages(R.view(2, 2), 2)),
    ("std", lambda: group_advantages(R, 2, std="sample")),
    ("loss", lambda: get_policy_loss("ppo")),
    ("p", lambda: apmpo_loss(NEW, OLD, ADV, MASK, p=0.0, eps_high=0.3)),
    ("p", lambda: apmpo_loss(NEW, OLD, ADV, MASK, p=1.2, eps_high=0.3)),
    ("p", lambda: apmpo_loss(NEW, OLD, ADV, MASK, p=torch.tensor([0.5, 0.5, 0.0, 0.5]), eps_high=0.3)),
    ("p", lambda: apmpo_loss(NEW, OLD, ADV, MASK, p=torch.full((3,), 0.5), eps_high=0.3)),
    ("eps_high", lambda: apmpo_loss(NEW, OLD, ADV, MASK, p=0.5, eps_high=-0.1)),
    ("eps_high", lambda: apmpo_loss(NEW, OLD, ADV, MASK, p=0.5, eps_high=1.0, clip="symmetric")),
    ("eps_low", lambda: apmpo_loss(NEW, OLD, ADV, MASK, p=0.5, eps_high=0.3, eps_low=1.0)),
    ("clip", lambda: apmpo_loss(NEW, OLD, ADV, MASK, p=0.5, eps_high=0.3, clip="both")),
    ("clip", lambda: gmpo_loss(NEW, OLD, ADV, MASK, clip=0.0)),
    ("old_log_probs", lambda: grpo_loss(NEW, OLD[:, :5], ADV, MASK)),
    ("action_mask", lambda: grpo_loss(NEW, OLD, ADV, MASK[:3])),
    ("advantages", lambda: grpo_loss(NEW, OLD, ADV[:3], MASK)),
    ("advantages", lambda: dapo_loss(NEW, OLD, ADV.view(4, 1), MASK)),
    ("log_probs", lambda: grpo_loss(NEW[0], OLD[0], ADV, MASK[0])),
    ("num_sequences", lambda: grpo_loss(NEW, OLD, ADV, MASK, num_sequences=0)),
    ("num_tokens", lambda: dapo_loss(NEW, OLD, ADV, MASK, num_tokens=-3)),
    ("eps_low", lambda: grpo_loss(NEW, OLD, ADV, MASK, eps_low=1.0)),
    ("estimator", lambda: kl_penalty(NEW, OLD, MASK, estimator="k4")),
    ("aggregation", lambda: kl_penalty(NEW, OLD, MASK, aggregation="batch")),
    ("ref_log_probs", lambda: kl_penalty(NEW, OLD[:2], MASK)),
    ("num_sequences", lambda: kl_penalty(NEW, OLD, MASK, num_sequences=0)),
]


@pytest.mark.parametrize("argument,fn", ERRORS, ids=[f"{i}-{e[0]}" for i, e in enumerate(ERRORS)])
def test_value_errors_name_the_argument(argument, fn):
    with pytest.raises(ValueError) as info:
        fn()
    assert argument in str(info.value)


@pytest.mark.parametrize("name", LOSSES)
def test_batch_without_any_valid_token(name):
    new, old, adv, mask = base_inputs(9)
    mask[:] = False
    leaf = new.clone().requires_grad_(True)
    loss, metrics = call(name, leaf, old, adv, mask)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert bool((leaf.grad == 0).all())
    assert all(float(v) == 0.0 for k, v in metrics.items() if k not in ("p", "eps_high", "eps_low"))


def test_compiled_apmpo_matches_eager():
    """The losses compile to one graph (tensor-content checks are eager-only); values and gradients
    of the compiled APMPO equal eager ones."""
    torch._dynamo.reset()
    new, old, adv, mask = (x.float() if x.is_floating_point() else x for x in base_inputs(10, n=8, t=64))
    p = torch.linspace(0.3, 1.0, 8)
    eh = torch.full((8,), 0.3)
    compiled = torch.compile(apmpo_loss, fullgraph=True)
    results = []
    for fn in (apmpo_loss, compiled):
        leaf = new.clone().requires_grad_(True)
        loss, metrics = fn(leaf, old, adv, mask, p=p, eps_high=eh, num_sequences=16)
        loss.backward()
        results.append((loss.detach(), leaf.grad, metrics["clip_frac_high"]))
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-7)
