"""Policy losses (SPEC.md 4 and the baselines of docs/algorithms.md), computed in log space.

GRPO, DAPO, GMPO, APMPO and Dr. GRPO share one clipping primitive:

    log x_t = min(l_t, clip(l_t, lo, hi)) = min(l_t, hi)  if A > 0      (x = min(r, rho))
            = max(l_t, clip(l_t, lo, hi)) = max(l_t, lo)  if A <= 0     (x = max(r, rho))

with l_t = log r_t, so that min(r A, rho A) = A x_t. The objectives differ in how the tokens of a
sequence are averaged and how the sum is normalised:

    GRPO     J_i = A_i * mean_t x_t                          (arithmetic mean, per sequence)
    DAPO     J   = sum_{i,t} A_i x_t / #tokens                (token-level mean)
    Dr.GRPO  J   = sum_{i,t} A_i x_t / (N * L)                (a constant token budget L)
    GMPO     J_i = A_i * exp(mean_t log x_t)                  (geometric mean, log-space clip)
    APMPO    J_i = A_i * M_p(x_i),  log M_p = (1/p) log mean_t exp(p log x_t)   (see log_power_mean)
    GSPO     J_i = min(s_i A_i, clip(s_i) A_i),  s_i = exp(mean_t l_t)   (sequence-level ratio and clip)
    CISPO    J   = sum_{i,t} sg(clip(r_t)) A_i log pi_t / #tokens   (clipped, detached IS weight)

Rollout correction (``is_weights``, docs/algorithms.md "Rollout/trainer mismatch"): per-token
weights w_t = pi_old / pi_rollout (truncated or masked by :mod:`.rollout_correction`). A token
average mean_t f_t becomes W_i * sum_t w_t f_t / sum_t w_t with W_i = mean_t w_t, the sequence's
mass; for the linear losses that is mean_t w_t f_t, exactly OpenRLHF's per-token coefficient.

Every loss returns ``(loss, metrics)`` where ``loss`` is the negative objective summed over the
given sequences (or tokens) and divided by a *global* count (``num_sequences`` or ``num_tokens``):
a step split into micro-batches and data-parallel shards then sums to exactly the full-batch
gradient. Inputs may be bf16/fp16; everything is accumulated in fp32 (fp64 stays fp64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._validation import check_choice, check_range, check_scalar_or_per_sample, data_checks_enabled

CLIP_MODES = ("asymmetric", "symmetric")

# |log r| beyond this is clamped before exponentiating: exp(60) ~ 1e26 is still finite in fp32,
# while exp(89) overflows and 0 * inf in the backward pass would give NaN. Ratios this far from 1
# are always clipped (no gradient) for A > 0 and are numerically meaningless anyway.
MAX_ABS_LOG_RATIO = 60.0
# Added to (subtracted from) padded log-ratios before a min (max), so that padding never wins.
_PADDING_OFFSET = 1e4

Metrics = dict[str, torch.Tensor]


def _check_inputs(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
) -> None:
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must have shape [N, T], got {tuple(log_probs.shape)}")
    if old_log_probs.shape != log_probs.shape:
        raise ValueError(
            f"old_log_probs shape {tuple(old_log_probs.shape)} must equal log_probs shape {tuple(log_probs.shape)}"
        )
    if action_mask.shape != log_probs.shape:
        raise ValueError(
            f"action_mask shape {tuple(action_mask.shape)} must equal log_probs shape {tuple(log_probs.shape)}"
        )
    n = log_probs.shape[0]
    if advantages.shape != (n,):
        raise ValueError(
            f"advantages must have shape [{n}] (one per sequence), got {tuple(advantages.shape)}"
        )


def _check_divisor(name: str, value: float | int | torch.Tensor | None) -> None:
    if value is None or (isinstance(value, torch.Tensor) and not data_checks_enabled()):
        return
    check_range(name, float(value), 0.0, None, low_inclusive=False)


def _per_sequence(value: float | torch.Tensor, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A float or [N] tensor as an [N, 1] column in the compute dtype (a constant for autograd)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, dtype=dtype).reshape(-1, 1).expand(n, 1)
    return torch.full((n, 1), float(value), dtype=dtype, device=device)


@dataclass
class _Prepared:
    mask: torch.Tensor  # [N, T] bool
    log_ratio: torch.Tensor  # [N, T] compute dtype, 0 where masked
    adv: torch.Tensor  # [N, 1] compute dtype, detached
    lengths: torch.Tensor  # [N] compute dtype, number of valid tokens
    weight: torch.Tensor  # [N, T] compute dtype: 1 (or the IS weight) on valid tokens, 0 on padding
    weighted: bool  # rollout-correction weights are in `weight`
    mass: torch.Tensor  # [N] sum_t weight (= lengths without IS weights)


def _prepare(log_probs, old_log_probs, advantages, action_mask, is_weights=None) -> _Prepared:
    _check_inputs(log_probs, old_log_probs, advantages, action_mask)
    dtype = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
    mask = action_mask.bool()
    diff = log_probs.to(dtype) - old_log_probs.detach().to(dtype)
    # Padding may hold arbitrary values (even inf); select instead of multiplying by the mask.
    # Padding gets log r = 0: never clipped, so the clip masks below need no extra masking.
    log_ratio = torch.where(mask, diff, 0.0).clamp(-MAX_ABS_LOG_RATIO, MAX_ABS_LOG_RATIO)
    adv = advantages.detach().to(dtype).reshape(-1, 1)
    # Later masking multiplies by a 0/1 weight: log_ratio is finite everywhere now, and on CPU a
    # multiply is ~20x faster than torch.where (forward and backward).
    weight = mask.to(dtype)
    lengths = weight.sum(dim=-1)
    if is_weights is None:
        return _Prepared(mask, log_ratio, adv, lengths, weight, False, lengths)
    if is_weights.shape != log_probs.shape:
        raise ValueError(
            f"is_weights shape {tuple(is_weights.shape)} must equal log_probs shape {tuple(log_probs.shape)}"
        )
    w = torch.where(mask, is_weights.detach().to(dtype), 0.0)
    if data_checks_enabled() and not bool(((w >= 0) & torch.isfinite(w)).all()):
        raise ValueError("is_weights must be finite and >= 0 on the valid tokens (0 drops a token)")
    return _Prepared(mask, log_ratio, adv, lengths, w, True, w.sum(dim=-1))


def clipped_log_ratio(
    log_ratio: torch.Tensor, advantages: torch.Tensor, log_low: torch.Tensor | float, log_high: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log x = min(l, clip(l)) for A > 0 and max(l, clip(l)) for A <= 0 (the PPO pessimistic bound;
    rows with A = 0 contribute nothing, either choice is exact for them).

    Returns ``(log_x, clipped_high, clipped_low)``; the boolean masks mark tokens whose gradient the
    clip removes (A > 0 above the upper bound, A < 0 below the lower bound).
    """
    # min(l, clip(l, lo, hi)) = min(l, hi) and max(l, clip(l, lo, hi)) = max(l, lo): each row needs
    # only one bound, so the pessimistic bound is a single clamp with per-row limits (one pass over
    # the tokens instead of clamp + minimum + maximum + where; same values and gradients).
    like = dict(dtype=log_ratio.dtype, device=log_ratio.device)
    positive = advantages > 0
    inf = torch.tensor(float("inf"), **like)
    row_low = torch.where(positive, -inf, torch.as_tensor(log_low, **like))
    row_high = torch.where(positive, torch.as_tensor(log_high, **like), inf)
    log_x = torch.clamp(log_ratio, min=row_low, max=row_high)
    with torch.no_grad():
        clipped = log_x != log_ratio
        clipped_high = clipped & positive
        clipped_low = clipped & (advantages < 0)
    return log_x, clipped_high, clipped_low


def _metrics(prep: _Prepared, clipped_high, clipped_low, p, eps_high, eps_low) -> Metrics:
    """Detached diagnostics over the valid tokens of this call (token means; p/eps sequence means)."""
    with torch.no_grad():
        mask = prep.mask
        lr = prep.log_ratio
        count = prep.lengths.sum().clamp(min=1)
        padding = mask.numel() - prep.lengths.sum()
        valid = mask.to(lr.dtype)
        # Branch-free (no device sync): a batch without valid tokens reports 0 for both.
        # |log r| <= MAX_ABS_LOG_RATIO, so moving padding by +-_PADDING_OFFSET takes it out of the race.
        offset = (1.0 - valid) * _PADDING_OFFSET
        any_valid = prep.lengths.sum() > 0
        lr_min = torch.where(any_valid, (lr + offset).amin(), 0.0)
        lr_max = torch.where(any_valid, (lr - offset).amax(), 0.0)
        return {
            # Padding is never clipped (log r = 0 there) and has exp(log r) = 1 exactly.
            "clip_frac_high": (clipped_high & mask).sum() / count,
            "clip_frac_low": (clipped_low & mask).sum() / count,
            "ratio_mean": (torch.exp(lr).sum() - padding) / count,
            "log_ratio_min": lr_min,
            "log_ratio_max": lr_max,
            "p": p.mean(),
            "eps_high": eps_high.mean(),
            "eps_low": eps_low.mean(),
        }


def _sequence_loss(per_sequence_objective: torch.Tensor, num_sequences) -> torch.Tensor:
    _check_divisor("num_sequences", num_sequences)
    n = per_sequence_objective.shape[0] if num_sequences is None else num_sequences
    return -per_sequence_objective.sum() / n


def _token_loss(per_token_objective: torch.Tensor, prep: _Prepared, num_tokens) -> torch.Tensor:
    _check_divisor("num_tokens", num_tokens)
    divisor = prep.mask.sum().clamp(min=1) if num_tokens is None else num_tokens
    return -per_token_objective.sum() / divisor


def _clip_bounds(prep: _Prepared, eps_low, eps_high) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence [N, 1] eps_low / eps_high columns after validating them."""
    n = prep.adv.shape[0]
    check_scalar_or_per_sample("eps_low", eps_low, n, 0.0, 1.0)
    check_scalar_or_per_sample("eps_high", eps_high, n, 0.0)
    el = _per_sequence(eps_low, n, prep.log_ratio.dtype, prep.log_ratio.device)
    eh = _per_sequence(eps_high, n, prep.log_ratio.dtype, prep.log_ratio.device)
    _check_eps_low_below_one(el)
    return el, eh


def _sequence_mass(prep: _Prepared) -> torch.Tensor:
    """W_i = mean_t w_t: the IS mass of each sequence (1 without correction; 0 for an empty row)."""
    return prep.mass / prep.lengths.clamp(min=1)


def grpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    eps_low: float | torch.Tensor = 0.2,
    eps_high: float | torch.Tensor = 0.2,
    num_sequences: int | float | torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """GRPO (Eq. 12): per-sequence token mean of min(r A, clip(r, 1-eps_low, 1+eps_high) A)."""
    prep = _prepare(log_probs, old_log_probs, advantages, action_mask, is_weights)
    el, eh = _clip_bounds(prep, eps_low, eps_high)
    log_x, ch, cl = clipped_log_ratio(prep.log_ratio, prep.adv, torch.log1p(-el), torch.log1p(eh))
    x = torch.exp(log_x) * prep.weight
    seq_mean = x.sum(dim=-1) / prep.lengths.clamp(min=1)
    loss = _sequence_loss(prep.adv.squeeze(-1) * seq_mean, num_sequences)
    return loss, _metrics(prep, ch, cl, torch.ones_like(el), eh, el)


def dapo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    eps_low: float | torch.Tensor = 0.2,
    eps_high: float | torch.Tensor = 0.28,
    num_tokens: int | float | torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """DAPO (Eq. 13): token-level mean over all tokens of min(r A, clip(r, 1-0.2, 1+0.28) A)."""
    prep = _prepare(log_probs, old_log_probs, advantages, action_mask, is_weights)
    el, eh = _clip_bounds(prep, eps_low, eps_high)
    log_x, ch, cl = clipped_log_ratio(prep.log_ratio, prep.adv, torch.log1p(-el), torch.log1p(eh))
    loss = _token_loss(torch.exp(log_x) * (prep.adv * prep.weight), prep, num_tokens)
    return loss, _metrics(prep, ch, cl, torch.ones_like(el), eh, el)


def drgrpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    token_budget: int | float,
    eps_low: float | torch.Tensor = 0.2,
    eps_high: float | torch.Tensor = 0.2,
    num_sequences: int | float | torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Dr. GRPO (arXiv 2503.20783, Sec. 3.2): sum_{i,t} min(r A, clip(r) A) / (N * L).

    GRPO without the per-response 1/|o_i| (and, in the advantages, without the std): every token
    weighs 1 / (N L) with a constant L = ``token_budget`` (the generation budget), so the loss has
    no length bias and micro-batches need only the global sequence count N.
    """
    prep = _prepare(log_probs, old_log_probs, advantages, action_mask, is_weights)
    check_range("token_budget", float(token_budget), 0.0, None, low_inclusive=False)
    el, eh = _clip_bounds(prep, eps_low, eps_high)
    log_x, ch, cl = clipped_log_ratio(prep.log_ratio, prep.adv, torch.log1p(-el), torch.log1p(eh))
    per_sequence = (torch.exp(log_x) * prep.weight).sum(dim=-1) / float(token_budget)
    loss = _sequence_loss(prep.adv.squeeze(-1) * per_sequence, num_sequences)
    return loss, _metrics(prep, ch, cl, torch.ones_like(el), eh, el)


def gmpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    clip: float = 0.4,
    num_sequences: int | float | torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """GMPO (official sign-aware form, SPEC.md 4): J_i = A_i exp(mean_t l~_t), l~ clipped to [-c, c]
    in log space. ``clip`` is c (log space); the equivalent ratio bounds are exp(-c) and exp(c).
    With ``is_weights``: J_i = A_i W_i exp(sum_t w_t l~_t / sum_t w_t) (the p -> 0 limit of APMPO's)."""
    prep = _prepare(log_probs, old_log_probs, advantages, action_mask, is_weights)
    n = prep.adv.shape[0]
    check_range("clip", float(clip), 0.0, None, low_inclusive=False)
    log_x, ch, cl = clipped_log_ratio(prep.log_ratio, prep.adv, -float(clip), float(clip))
    if prep.weighted:
        mean_log_x = (log_x * prep.weight).sum(-1) / prep.mass.clamp(min=torch.finfo(log_x.dtype).tiny)
        valid = prep.mass > 0
        scale = _sequence_mass(prep)
    else:
        # Padding has log r = 0, inside every clip range, so log x = 0 there: a plain row sum is exact.
        mean_log_x = log_x.sum(-1) / prep.lengths.clamp(min=1)
        valid = prep.lengths > 0
        scale = 1.0
    geo = torch.where(valid, torch.exp(mean_log_x), torch.zeros_like(mean_log_x))
    loss = _sequence_loss(prep.adv.squeeze(-1) * scale * geo, num_sequences)
    dtype, device = prep.log_ratio.dtype, prep.log_ratio.device
    eps_high = _per_sequence(math.expm1(clip), n, dtype, device)
    eps_low = _per_sequence(-math.expm1(-clip), n, dtype, device)
    return loss, _metrics(prep, ch, cl, torch.zeros_like(eps_high), eps_high, eps_low)


class _LogMeanExp(torch.autograd.Function):
    """log (sum_t w_t exp(p (log x_t - c)) / sum_t w_t) per row, with c = max over tokens with w > 0.

    Without rollout correction w is the 0/1 token mask: the plain mean. Forward: with
    z_t = p (log x_t - c) <= 0, the mean is 1 + s where s = sum_t w_t expm1(z_t) / sum_t w_t in
    (-1, 0] is a sum of same-sign, individually exact terms, so log1p(s) keeps full precision when
    p * spread is small (where the textbook (logsumexp(p log x) - log n) / p cancels: ~1e-3 relative
    error in fp32 at p = 1e-3 and 4096 tokens). When one token dominates (s near -1) log1p loses
    digits and log(S / sum w), S = sum_t w_t exp(z_t), is exact instead; each row takes its exact
    form. Backward: d/dlog x_t = p * w_t exp(z_t) / S (a weighted softmax over p log x). Written by
    hand so that it is one pass over the tokens and saves a single [N, T] tensor.
    """

    @staticmethod
    def forward(ctx, log_x, include, weight, total, p):
        # include is the 0/1 float mask of the tokens that enter the max; log_x is finite
        # (|log x| <= MAX_ABS_LOG_RATIO), so masking by multiplication is exact and excluded tokens
        # get z = 0 (expm1 = 0) and e = 0.
        if weight is None:  # the plain mean (no rollout correction): the weights are the 0/1 mask
            weight = include
        shift = (log_x - (1.0 - include) * _PADDING_OFFSET).amax(dim=-1, keepdim=True)
        z = torch.addcmul(-p * shift, p, log_x) * include
        mean_expm1 = (torch.expm1(z) * weight).sum(dim=-1, keepdim=True) / total
        e = torch.exp(z) * weight
        sum_exp = e.sum(dim=-1, keepdim=True)
        log_mean = torch.where(mean_expm1 > -0.5, torch.log1p(mean_expm1), torch.log(sum_exp / total))
        ctx.save_for_backward(e, sum_exp, p)
        return shift, log_mean

    @staticmethod
    def backward(ctx, grad_shift, grad_log_mean):
        e, sum_exp, p = ctx.saved_tensors
        # The shift is a constant of the expression (its total derivative is zero): only log_mean
        # carries a gradient; grad_shift is ignored on purpose.
        return e * (grad_log_mean * p / sum_exp), None, None, None, None


def log_power_mean(
    log_x: torch.Tensor,
    mask: torch.Tensor,
    p: torch.Tensor,
    lengths: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """log M_p(x) = (1/p) log mean_t exp(p log x_t) over the valid tokens of each row.

    ``log_x`` must be finite (the losses guarantee |log x| <= MAX_ABS_LOG_RATIO; padding is then
    masked by multiplication). ``p`` is an [N, 1] column in (0, 1]. Rows with no valid token return
    log M = 0 and must be masked by the caller; their computation stays finite so that no NaN
    reaches the gradient. Computed as c + log(mean_t exp(p (log x_t - c))) / p with c = max_t
    log x_t, see _LogMeanExp. ``lengths`` ([N], valid tokens per row) may be passed to save a pass
    over the mask. ``weights`` ([N, T], >= 0, 0 on padding): the self-normalised weighted mean
    sum_t w_t x_t^p / sum_t w_t instead (rows whose weights are all 0 count as empty).
    """
    if weights is None:
        lengths = (mask.sum(dim=-1) if lengths is None else lengths).reshape(-1, 1)
        include = mask
        weight = None
    else:
        include = mask & (weights > 0)
        weight = weights
        lengths = weights.sum(dim=-1, keepdim=True)
    empty = lengths == 0
    include = include | empty  # an empty row averages its (finite) padding instead of an empty set
    include_f = include.to(log_x.dtype)
    if weight is not None:
        weight = torch.where(empty, include_f, weight.to(log_x.dtype))
    total = torch.where(empty, torch.full_like(lengths, mask.shape[-1]), lengths).to(log_x.dtype)
    p = p.to(log_x.dtype).expand(log_x.shape[0], 1)
    shift, log_mean_exp = _LogMeanExp.apply(log_x, include_f, weight, total, p)
    log_mean = shift.detach() + log_mean_exp / p
    return torch.where(empty, torch.zeros_like(log_mean), log_mean).squeeze(-1)


def apmpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    p: float | torch.Tensor,
    eps_high: float | torch.Tensor,
    eps_low: float | torch.Tensor = 0.2,
    clip: str = "asymmetric",
    num_sequences: int | float | torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """APMPO (Eq. 7-10): J_i = sgn(A_i) [mean_t phi_{i,t}^p]^(1/p), phi = |min(r A, rho A)|.

    Computed as A_i * M_p(x_i) in log space (identical, see module docstring). ``p`` and
    ``eps_high`` are floats or per-sequence [N] tensors from ``adaptive_parameters``.
    ``clip="asymmetric"`` uses rho = clip(r, 1-eps_low, 1+eps_high) (Eq. 7); ``"symmetric"``
    uses clip(r, 1-eps_high, 1+eps_high) (Eq. 81) and ignores eps_low. With ``is_weights``:
    J_i = A_i W_i [sum_t w_t x_t^p / sum_t w_t]^(1/p) (GRPO's correction at p = 1, GMPO's as p -> 0).
    """
    prep = _prepare(log_probs, old_log_probs, advantages, action_mask, is_weights)
    n = prep.adv.shape[0]
    check_choice("clip", clip, CLIP_MODES)
    check_scalar_or_per_sample("p", p, n, 0.0, 1.0, low_inclusive=False)
    check_scalar_or_per_sample("eps_high", eps_high, n, 0.0)
    check_scalar_or_per_sample("eps_low", eps_low, n, 0.0, 1.0)
    dtype, device = prep.log_ratio.dtype, prep.log_ratio.device
    p_col = _per_sequence(p, n, dtype, device)
    eh = _per_sequence(eps_high, n, dtype, device)
    el = eh if clip == "symmetric" else _per_sequence(eps_low, n, dtype, device)
    _check_eps_low_below_one(el, "eps_high (the lower bound under symmetric clip)" if clip == "symmetric" else "eps_low")
    log_x, ch, cl = clipped_log_ratio(prep.log_ratio, prep.adv, torch.log1p(-el), torch.log1p(eh))
    if prep.weighted:
        power_mean = torch.exp(log_power_mean(log_x, prep.mask, p_col, weights=prep.weight))
        power_mean = torch.where(prep.mass > 0, power_mean * _sequence_mass(prep), torch.zeros_like(power_mean))
    else:
        power_mean = torch.exp(log_power_mean(log_x, prep.mask, p_col, prep.lengths))
        power_mean = torch.where(prep.lengths > 0, power_mean, torch.zeros_like(power_mean))
    loss = _sequence_loss(prep.adv.squeeze(-1) * power_mean, num_sequences)
    return loss, _metrics(prep, ch, cl, p_col, eh, el)


def gspo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    eps_low: float | torch.Tensor = 3e-4,
    eps_high: float | torch.Tensor = 4e-4,
    num_sequences: int | float | torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """GSPO (arXiv 2507.18071, Eq. 5-7): J_i = min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i) with
    the length-normalised sequence ratio s_i = (pi(y_i) / pi_old(y_i))^(1/|y_i|) = exp(mean_t l_t).

    The clip acts on the whole sequence (the paper's ranges are 3e-4 / 4e-4); a clipped sequence
    has no gradient. With ``is_weights``: s_i = exp(sum_t w_t l_t / sum_t w_t), J_i scaled by W_i.
    """
    prep = _prepare(log_probs, old_log_probs, advantages, action_mask, is_weights)
    el, eh = _clip_bounds(prep, eps_low, eps_high)
    total = prep.mass if prep.weighted else prep.lengths
    valid = total > 0
    log_s = (prep.log_ratio * prep.weight).sum(-1, keepdim=True) / total.clamp(min=torch.finfo(total.dtype).tiny).unsqueeze(-1)
    log_x, ch_seq, cl_seq = clipped_log_ratio(log_s, prep.adv, torch.log1p(-el), torch.log1p(eh))
    per_sequence = torch.where(valid, torch.exp(log_x.squeeze(-1)), torch.zeros_like(total))
    if prep.weighted:
        per_sequence = per_sequence * _sequence_mass(prep)
    loss = _sequence_loss(prep.adv.squeeze(-1) * per_sequence, num_sequences)
    # a clipped sequence's tokens all lose their gradient: report them as clipped tokens
    return loss, _metrics(prep, ch_seq.expand_as(prep.mask), cl_seq.expand_as(prep.mask),
                          torch.zeros_like(el), eh, el)


def cispo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    eps_high: float | torch.Tensor = 0.28,
    eps_low: float | torch.Tensor | None = None,
    num_tokens: int | float | torch.Tensor | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """CISPO (MiniMax-M1, arXiv 2506.13585, Eq. 4-5): J = sum_{i,t} sg(r^_t) A_i log pi_t / #tokens,
    r^ = clip(r, 1 - eps_low, 1 + eps_high).

    A REINFORCE-style token loss whose importance weight is clipped and detached: no token loses its
    gradient (PPO's clip drops them), the weight only bounds its size. ``eps_low=None`` (the paper's
    choice) imposes no lower bound on the weight.
    """
    prep = _prepare(log_probs, old_log_probs, advantages, action_mask, is_weights)
    n = prep.adv.shape[0]
    check_scalar_or_per_sample("eps_high", eps_high, n, 0.0)
    dtype, device = prep.log_ratio.dtype, prep.log_ratio.device
    eh = _per_sequence(eps_high, n, dtype, device)
    if eps_low is None:
        el = torch.ones_like(eh)  # the weight's lower bound 1 - 1 = 0: none
    else:
        check_scalar_or_per_sample("eps_low", eps_low, n, 0.0, 1.0)
        el = _per_sequence(eps_low, n, dtype, device)
    with torch.no_grad():
        ratio = torch.exp(prep.log_ratio)
        weight = torch.clamp(ratio, min=1.0 - el, max=1.0 + eh)
        clipped_high = ratio > 1.0 + eh
        clipped_low = ratio < 1.0 - el
    current = torch.where(prep.mask, log_probs.to(dtype), 0.0)
    loss = _token_loss(weight * prep.adv * prep.weight * current, prep, num_tokens)
    return loss, _metrics(prep, clipped_high, clipped_low, torch.ones_like(eh), eh, el)


def _check_eps_low_below_one(eps_low: torch.Tensor, name: str = "eps_low") -> None:
    if data_checks_enabled() and bool((eps_low >= 1).any()):
        raise ValueError(f"{name} must be < 1 so that the lower ratio bound 1 - {name} stays positive")
