"""Argument checks shared by the algorithm core: every error names the argument and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def data_checks_enabled() -> bool:
    """Value checks that read tensor contents (a device sync, a graph break under torch.compile)
    run in eager mode only; shape and choice checks always run."""
    return not torch.compiler.is_compiling()


def check_choice(name: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise ValueError unless low <= value <= high (bounds optional, inclusivity configurable)."""
    ok = True
    if low is not None:
        ok &= value >= low if low_inclusive else value > low
    if high is not None:
        ok &= value <= high if high_inclusive else value < high
    if not ok or value != value:  # value != value catches NaN
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        lb = "[" if low_inclusive and low is not None else "("
        hb = "]" if high_inclusive and high is not None else ")"
        raise ValueError(f"{name}={value!r} is out of range; allowed: {lb}{lo}, {hi}{hb}")


def check_scalar_or_per_sample(
    name: str,
    value: float | torch.Tensor,
    n: int,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
) -> None:
    """A hyper-parameter given as a float or a [N] tensor (one value per sequence)."""
    if isinstance(value, torch.Tensor):
        if value.dim() not in (0, 1) or (value.dim() == 1 and value.shape != (n,)):
            raise ValueError(f"{name} must be a float or a tensor of shape [{n}] (one per sequence), got {tuple(value.shape)}")
        if not data_checks_enabled():
            return
        if value.dim() == 0:
            check_range(name, float(value), low, high, low_inclusive)
            return
        lo = float(value.min())
        hi = float(value.max())
        check_range(f"{name} (min over sequences)", lo, low, high, low_inclusive)
        check_range(f"{name} (max over sequences)", hi, low, high, low_inclusive)
    else:
        check_range(name, float(value), low, high, low_inclusive)


def check_group_size(rewards: torch.Tensor, group_size: int) -> None:
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 1:
        shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a 1-D tensor (consecutive group_size entries form one group), got {shape}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size={group_size!r} must be a positive integer")
    if rewards.numel() == 0 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"group_size={group_size} must divide the number of rewards ({rewards.numel()}) "
            "and there must be at least one group"
        )
