"""Synthetic verifiable tasks for the local backend (prompt generators with checkable answers)."""

from .arithmetic import ArithmeticTask, arithmetic_problems, as_records, split_problems

__all__ = ["ArithmeticTask", "arithmetic_problems", "as_records", "split_problems"]
