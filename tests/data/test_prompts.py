"""The paper's prompts (SPEC.md section 6) as chat messages."""

from __future__ import annotations

import pytest

from apmpo_openrlhf.prompts import MATH_INSTRUCTION, geometry_messages, math_messages, sql_messages


def test_math_prompt_styles():
    assert MATH_INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."
    assert math_messages("What is 1+1?") == [
        {"role": "system", "content": MATH_INSTRUCTION},
        {"role": "user", "content": "What is 1+1?"},
    ]
    assert math_messages("What is 1+1?", "r1") == [{"role": "user", "content": "What is 1+1?\n" + MATH_INSTRUCTION}]
    with pytest.raises(ValueError, match="prompt_style must be one of"):
        math_messages("x", "llama")
    with pytest.raises(ValueError, match="problem must be a non-empty string"):
        math_messages("  ")


def test_sql_prompt():
    (msg,) = sql_messages("CREATE TABLE t (a INT);", "How many rows?", "rows = records")
    assert msg["role"] == "user"
    text = msg["content"]
    assert text.index("CREATE TABLE t") < text.index("How many rows?") < text.index("rows = records")
    assert "```sql" in text
    assert "External knowledge" not in sql_messages("CREATE TABLE t (a INT);", "q")[0]["content"]


def test_geometry_prompt():
    (msg,) = geometry_messages("Find x.", ["1", "2", "3", "4"])
    assert msg["content"].startswith("<image>Find x.")
    assert "A. 1\nB. 2\nC. 3\nD. 4" in msg["content"] and "\\boxed{}" in msg["content"]
    with pytest.raises(ValueError, match="choices"):
        geometry_messages("Find x.", [])
