"""Policy losses against float64 references written literally from the paper's equations.

The references below loop over sequences and use the equations' own symbols (r, rho, U, phi,
M_p, sgn); they deliberately share no code with apmpo_openrlhf.algorithms. Gradients of the
references come from autograd on those literal formulas (and, for APMPO, also from the closed
form of Appendix H, Eq. 58-61).
"""

from __future__ import annotations

import math

import pytest
import torch

from apmpo_openrlhf.algorithms import apmpo_loss, dapo_loss, get_policy_loss, gmpo_loss, grpo_loss

F64 = torch.float64


# ----------------------------------------------------------------------------- inputs
def make_batch(seed: int, n: int = 6, t: int = 12, scale: float = 0.3, min_len: int = 2):
    """Random log-probs, old log-probs (log r ~ N(0, scale)), right-padded masks and non-zero advantages.

    Padding positions hold large garbage values so that any leak of padding into a loss shows up.
    """
    g = torch.Generator().manual_seed(seed)
    old = -3.0 * torch.rand(n, t, generator=g, dtype=F64) - 0.05
    new = old + scale * torch.randn(n, t, generator=g, dtype=F64)
    lengths = torch.randint(min_len, t + 1, (n,), generator=g)
    lengths[0] = t  # at least one full-length row
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    garbage = 50.0 * torch.randn(n, t, generator=g, dtype=F64)
    new = torch.where(mask, new, garbage)
    old = torch.where(mask, old, -garbage)
    adv = torch.randn(n, generator=g, dtype=F64)
    adv = torch.where(adv.abs() < 0.05, torch.full_like(adv, 0.5), adv)  # keep sgn(A) well defined
    return new.requires_grad_(True), old, adv, mask


def _sgn(a: torch.Tensor) -> torch.Tensor:
    return torch.sign(a)


def _per(value, i: int) -> float:
    return float(value[i]) if isinstance(value, torch.Tensor) else float(value)


# ------------------------------------------------------------------- literal references
def ref_apmpo(new, old, adv, mask, p, eps_high, eps_low=0.2, clip="asymmetric"):
    """-(1/N) sum_i J_i with Eq. 7-10: rho = clip(r, 1-eps_low, 1+eps_ada), phi = |min(rA, rho A)|,
    J_i = [1/|o_i| sum_t phi^p]^(1/p) * sgn(A_i)."""
    n = new.shape[0]
    total = new.new_zeros(())
    for i in range(n):
        m = mask[i]
        r = torch.exp(new[i][m] - old[i][m])
        a = adv[i]
        eh = _per(eps_high, i)
        el = eh if clip == "symmetric" else _per(eps_low, i)  # Eq. 81 for symmetric
        rho = torch.clamp(r, 1 - el, 1 + eh)
        phi = torch.abs(torch.minimum(r * a, rho * a))
        pi = _per(p, i)
        j_i = torch.mean(phi**pi) ** (1.0 / pi) * _sgn(a)
        total = total + j_i
    return -total / n


def ref_geometric(new, old, adv, mask, eps_high, eps_low=0.2):
    """-(1/N) sum_i of Eq. 30: sgn(A_i) (prod_t phi_{i,t})^(1/|o_i|)."""
    n = new.shape[0]
    total = new.new_zeros(())
    for i in range(n):
        m = mask[i]
        r = torch.exp(new[i][m] - old[i][m])
        rho = torch.clamp(r, 1 - eps_low, 1 + eps_high)
        phi = torch.abs(torch.minimum(r * adv[i], rho * adv[i]))
        total = total + _sgn(adv[i]) * torch.prod(phi) ** (1.0 / int(m.sum()))
    return -total / n


def ref_grpo(new, old, adv, mask, eps_low=0.2, eps_high=0.2):
    """Eq. 12: -(1/N) sum_i 1/|o_i| sum_t min(r A, clip(r, 1-eps, 1+eps) A)."""
    n = new.shape[0]
    total = new.new_zeros(())
    for i in range(n):
        m = mask[i]
        r = torch.exp(new[i][m] - old[i][m])
        clipped = torch.clamp(r, 1 - eps_low, 1 + eps_high)
        total = total + torch.mean(torch.minimum(r * adv[i], clipped * adv[i]))
    return -total / n


def ref_dapo(new, old, adv, mask, eps_low=0.2, eps_high=0.28):
    """Eq. 13: -(1 / sum_i |o_i|) sum_i sum_t min(r A, clip(r, 1-eps_low, 1+eps_high) A)."""
    total = new.new_zeros(())
    count = 0
    for i in range(new.shape[0]):
        m = mask[i]
        r = torch.exp(new[i][m] - old[i][m])
        clipped = torch.clamp(r, 1 - eps_low, 1 + eps_high)
        total = total + torch.sum(torch.minimum(r * adv[i], clipped * adv[i]))
        count += int(m.sum())
    return -total / count


def ref_gmpo(new, old, adv, mask, c=0.4):
    """SPEC.md 4 (official GMPO): s = sgn(A), l~ = s * min(s l, s clip(l, -c, c)), J_i = A exp(mean l~)."""
    n = new.shape[0]
    total = new.new_zeros(())
    for i in range(n):
        m = mask[i]
        log_r = new[i][m] - old[i][m]
        s = _sgn(adv[i])
        l_tilde = s * torch.minimum(s * log_r, s * torch.clamp(log_r, -c, c))
        total = total + adv[i] * torch.exp(torch.mean(l_tilde))
    return -total / n


def grad_of(loss_fn, new, *args, **kwargs):
    leaf = new.detach().clone().requires_grad_(True)
    out = loss_fn(leaf, *args, **kwargs)
    loss = out[0] if isinstance(out, tuple) else out
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------- APMPO
P_GRID = [0.05, 0.1, 0.2, 0.35, 0.449, 0.6, 0.8, 0.95, 1.0]


@pytest.mark.parametrize("clip", ["asymmetric", "symmetric"])
@pytest.mark.parametrize("eps_high", [0.2, 0.28, 0.4])
@pytest.mark.parametrize("p", P_GRID)
def test_apmpo_value_and_gradient_match_eq_7_to_10(p, eps_high, clip):
    seed = int(p * 1000) + int(eps_high * 100) + (7 if clip == "symmetric" else 0)
    new, old, adv, mask = make_batch(seed, scale=0.3)
    loss, grad = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=eps_high, clip=clip)
    ref_loss, ref_grad = grad_of(ref_apmpo, new, old, adv, mask, p, eps_high, 0.2, clip)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)
    # The inputs really exercise both clip sides (else the test would not check the clip).
    _, metrics = apmpo_loss(new, old, adv, mask, p=p, eps_high=eps_high, clip=clip)
    assert metrics["clip_frac_high"] + metrics["clip_frac_low"] > 0


def test_apmpo_per_sequence_p_and_eps_tensors_match_reference():
    new, old, adv, mask = make_batch(11, n=8)
    g = torch.Generator().manual_seed(5)
    p = 0.05 + 0.95 * torch.rand(8, generator=g, dtype=F64)
    eh = 0.2 + 0.2 * torch.rand(8, generator=g, dtype=F64)
    el = 0.1 + 0.2 * torch.rand(8, generator=g, dtype=F64)
    loss, grad = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=eh, eps_low=el)
    ref_loss, ref_grad = grad_of(ref_apmpo, new, old, adv, mask, p, eh, el)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


@pytest.mark.parametrize("seed", range(4))
def test_apmpo_at_p_1_with_eps_0_2_equals_grpo_exactly(seed):
    new, old, adv, mask = make_batch(100 + seed, scale=0.4)
    loss_a, grad_a = grad_of(apmpo_loss, new, old, adv, mask, p=1.0, eps_high=0.2, eps_low=0.2)
    loss_g, grad_g = grad_of(grpo_loss, new, old, adv, mask, eps_low=0.2, eps_high=0.2)
    ref_loss, ref_grad = grad_of(ref_grpo, new, old, adv, mask)
    assert_close(loss_a, loss_g, rtol=1e-13, atol=1e-15)
    assert_close(grad_a, grad_g, rtol=1e-13, atol=1e-15)
    assert_close(loss_g, ref_loss)
    assert_close(grad_g, ref_grad)


@pytest.mark.parametrize("p", [1e-3, 1e-4, 1e-6])
def test_apmpo_tends_to_geometric_form_of_eq_30(p):
    new, old, adv, mask = make_batch(200, scale=0.3)
    loss, grad = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=0.28)
    geo_loss, geo_grad = grad_of(ref_geometric, new, old, adv, mask, 0.28)
    # M_p - M_0 = M_0 * p/2 * Var_t(log x) + O(p^2): the gap shrinks linearly with p.
    assert abs(float(loss - geo_loss)) <= 0.5 * p + 1e-12
    assert_close(grad, geo_grad, rtol=0, atol=0.5 * p + 1e-12)
    assert abs(float(loss - geo_loss)) > 0 or p < 1e-5  # not identical by accident


def test_apmpo_small_p_equals_gmpo_when_bounds_coincide():
    """With ratio bounds exp(+-c) APMPO's clip is GMPO's log-space clip; p -> 0 then gives GMPO."""
    new, old, adv, mask = make_batch(201, scale=0.5)
    c = 0.4
    p = 1e-6
    loss_a, grad_a = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=math.expm1(c), eps_low=-math.expm1(-c))
    loss_g, grad_g = grad_of(gmpo_loss, new, old, adv, mask, clip=c)
    assert_close(loss_a, loss_g, rtol=0, atol=1e-5)
    assert_close(grad_a, grad_g, rtol=0, atol=1e-5)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("scale", [0.05, 0.6])
def test_apmpo_gradient_matches_closed_form_of_appendix_h(p, scale):
    """Eq. 58-61: dJ_i/dlog pi_t = (1/|o_i|) w_t A_i r_t with w_t = M_p^(1-p) phi_t^(p-1) for tokens
    with r < rho (unclipped); Eq. 53 gives clipped tokens no gradient. scale 0.05 clips nothing."""
    eps_high = 0.3
    new, old, adv, mask = make_batch(300 + int(10 * p), scale=scale)
    _, grad = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=eps_high)
    n = new.shape[0]
    expected = torch.zeros_like(grad)
    any_clipped = False
    with torch.no_grad():
        for i in range(n):
            m = mask[i]
            r = torch.exp(new[i][m] - old[i][m])
            a = adv[i]
            rho = torch.clamp(r, 0.8, 1 + eps_high)
            phi = torch.abs(torch.minimum(r * a, rho * a))
            length = int(m.sum())
            m_p = torch.mean(phi**p) ** (1.0 / p)
            w = m_p ** (1 - p) * phi ** (p - 1)  # Eq. 59
            # r A < rho A: the r branch is active (Eq. 53); otherwise the gradient flows through rho,
            # which is constant where r is clipped.
            active = r * a < rho * a + 1e-15 * abs(float(a))
            active |= r == rho
            any_clipped |= bool((~active).any())
            dJ = torch.where(active, w * a * r / length, torch.zeros_like(r))  # Eq. 61
            expected[i][m] = -dJ / n
    if scale < 0.1:
        assert not any_clipped
    else:
        assert any_clipped
    assert_close(grad, expected)


# ----------------------------------------------------------------------- baselines
@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.1, 0.3), (0.2, 0.28)])
@pytest.mark.parametrize("seed", range(3))
def test_grpo_matches_eq_12(eps, seed):
    new, old, adv, mask = make_batch(400 + seed, scale=0.4)
    loss, grad = grad_of(grpo_loss, new, old, adv, mask, eps_low=eps[0], eps_high=eps[1])
    ref_loss, ref_grad = grad_of(ref_grpo, new, old, adv, mask, *eps)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


@pytest.mark.parametrize("c", [0.2, 0.4, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_gmpo_matches_sign_aware_log_space_form(c, seed):
    new, old, adv, mask = make_batch(500 + seed, scale=0.5)
    loss, grad = grad_of(gmpo_loss, new, old, adv, mask, clip=c)
    ref_loss, ref_grad = grad_of(ref_gmpo, new, old, adv, mask, c)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


@pytest.mark.parametrize("eps", [(0.2, 0.28), (0.2, 0.2), (0.1, 0.4)])
@pytest.mark.parametrize("seed", range(3))
def test_dapo_matches_eq_13(eps, seed):
    new, old, adv, mask = make_batch(600 + seed, scale=0.4)
    loss, grad = grad_of(dapo_loss, new, old, adv, mask, eps_low=eps[0], eps_high=eps[1])
    ref_loss, ref_grad = grad_of(ref_dapo, new, old, adv, mask, *eps)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


def test_registry_names_divisors_and_adaptive_flags():
    expected = {"grpo": ("num_sequences", False), "dapo": ("num_tokens", False),
                "gmpo": ("num_sequences", False), "apmpo": ("num_sequences", True)}
    new, old, adv, mask = make_batch(700)
    for name, (divisor, adaptive) in expected.items():
        entry = get_policy_loss(name)
        assert (entry.name, entry.divisor, entry.adaptive) == (name, divisor, adaptive)
        kwargs = {"p": 0.5, "eps_high": 0.3} if adaptive else {}
        loss, _ = entry(new, old, adv, mask, **kwargs, **{divisor: 3})
        direct = {"grpo": grpo_loss, "dapo": dapo_loss, "gmpo": gmpo_loss, "apmpo": apmpo_loss}[name]
        assert_close(loss, direct(new, old, adv, mask, **kwargs, **{divisor: 3})[0])


# ---------------------------------------------------------------- on-policy caveat
@pytest.mark.parametrize("p", [0.05, 0.449, 0.8, 1.0])
@pytest.mark.parametrize("eps_high", [0.2, 0.4])
def test_on_policy_gradients_of_grpo_gmpo_apmpo_coincide(p, eps_high):
    """SPEC.md 5: with r = 1 every method's gradient is -(1/N) A_i / |o_i| per valid token."""
    new, _, adv, mask = make_batch(800 + int(100 * p))
    old = new.detach().clone()
    _, g_grpo = grad_of(grpo_loss, new, old, adv, mask, eps_low=0.2, eps_high=eps_high)
    _, g_gmpo = grad_of(gmpo_loss, new, old, adv, mask, clip=0.4)
    _, g_apmpo = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=eps_high)
    lengths = mask.sum(-1, keepdim=True).to(F64)
    expected = torch.where(mask, -(adv.unsqueeze(-1) / lengths) / new.shape[0], torch.zeros_like(new))
    for g in (g_grpo, g_gmpo, g_apmpo):
        assert_close(g, expected)
    # DAPO's token-level mean weighs tokens differently even on-policy (unequal lengths).
    _, g_dapo = grad_of(dapo_loss, new, old, adv, mask)
    assert not torch.allclose(g_dapo, expected)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_off_policy_gradients_differ(p):
    new, old, adv, mask = make_batch(900, scale=0.3)
    _, g_grpo = grad_of(grpo_loss, new, old, adv, mask)
    _, g_gmpo = grad_of(gmpo_loss, new, old, adv, mask)
    _, g_apmpo = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=0.2)
    for a, b in [(g_grpo, g_gmpo), (g_grpo, g_apmpo), (g_gmpo, g_apmpo)]:
        assert (a - b).abs().max() > 1e-4


# ------------------------------------------------------------------ micro-batching
SPLITS = [[6], [3, 3], [1, 2, 3], [1, 1, 1, 1, 1, 1]]


def _micro_batched_grad(fn, new, old, adv, mask, sizes, divisor_kw, divisor, **kwargs):
    leaf = new.detach().clone().requires_grad_(True)
    start = 0
    total = leaf.new_zeros(())
    for size in sizes:
        sl = slice(start, start + size)
        per_seq = {k: (v[sl] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        loss, _ = fn(leaf[sl], old[sl], adv[sl], mask[sl], **per_seq, **{divisor_kw: divisor})
        loss.backward()
        total = total + loss.detach()
        start += size
    return total, leaf.grad


@pytest.mark.parametrize("sizes", SPLITS)
@pytest.mark.parametrize("name", ["grpo", "gmpo", "apmpo", "dapo"])
def test_micro_batches_with_global_divisor_sum_to_full_batch_gradient(name, sizes):
    new, old, adv, mask = make_batch(1000, n=6, scale=0.4)
    fn = get_policy_loss(name)
    kwargs = {}
    if name == "apmpo":
        kwargs = {"p": torch.tensor([0.3, 0.5, 0.7, 0.9, 1.0, 0.45], dtype=F64), "eps_high": 0.31}
    divisor = 6 if fn.divisor == "num_sequences" else int(mask.sum())
    full_loss, full_grad = grad_of(fn, new, old, adv, mask, **kwargs)
    loss, grad = _micro_batched_grad(fn, new, old, adv, mask, sizes, fn.divisor, divisor, **kwargs)
    assert_close(loss, full_loss, rtol=1e-12, atol=1e-14)
    assert_close(grad, full_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("p", [0.3, 0.6, 1.0])
def test_apmpo_with_a_dominant_token_matches_reference(p):
    """A < 0 leaves x = max(r, rho) unbounded above: one token with r = e^8 dominates the power mean
    (the logsumexp branch of the core's power mean); value and gradient still follow Eq. 7-10."""
    new, old, adv, mask = make_batch(1100 + int(10 * p), scale=0.2)
    adv = -adv.abs()
    with torch.no_grad():
        new[:, 1] = old[:, 1] + 8.0
    loss, grad = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=0.3)
    ref_loss, ref_grad = grad_of(ref_apmpo, new, old, adv, mask, p, 0.3)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


@pytest.mark.parametrize("spread", [0.05, 3.0, 20.0])
def test_log_power_mean_passes_gradcheck(spread):
    """The hand-written backward of the power mean against finite differences, in both regimes."""
    from apmpo_openrlhf.algorithms import log_power_mean

    g = torch.Generator().manual_seed(int(spread * 10))
    log_x = (spread * torch.randn(5, 9, generator=g, dtype=F64)).requires_grad_(True)
    mask = torch.rand(5, 9, generator=g) < 0.8
    mask[0] = True
    mask[4] = False  # an empty row
    p = torch.tensor([[0.05], [0.3], [0.7], [1.0], [0.5]], dtype=F64)
    assert torch.autograd.gradcheck(lambda lx: log_power_mean(lx, mask, p), (log_x,))
    # and the value is the literal (1/p) log mean x^p on the valid tokens
    out = log_power_mean(log_x, mask, p)
    for i in range(4):
        xs = torch.exp(log_x[i][mask[i]])
        expected = torch.log(torch.mean(xs ** float(p[i]))) / float(p[i])
        assert_close(out[i], expected)
    assert float(out[4].detach()) == 0.0
