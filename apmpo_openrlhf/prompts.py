"""The prompts of the paper's experiments (SPEC.md section 6), as chat message lists.

This is the one place prompts are defined: training data preparation (OpenRLHF applies the
model's chat template with ``--data.apply_chat_template``) and the evaluation harness both call
these functions, so a model sees the same text in both. Every function returns
``[{"role": ..., "content": str}, ...]``.
"""

from __future__ import annotations

from typing import Sequence

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROMPT_STYLES = ("qwen", "r1")
# OpenRLHF turns this tag in a message into an image item (datasets/prompts_dataset.py).
IMAGE_TAG = "<image>"
CHOICE_LETTERS = "ABCDEFGH"

SQL_INSTRUCTION = (
    "Write one SQLite query that answers the question. Think step by step if it helps, then give "
    "the final query in a ```sql code block."
)
GEOMETRY_INSTRUCTION = (
    "Please reason step by step, and put the letter of the correct choice within \\boxed{}."
)


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r:.80}")
    return value.strip()


def math_messages(problem: str, prompt_style: str = "qwen") -> list[dict[str, str]]:
    """Math prompt. ``qwen`` (Qwen2.5 models): the instruction as the system message and the problem
    as the user message. ``r1`` (DeepSeek-R1-Distill): no system message; the instruction is
    appended to the problem."""
    problem = _check_text("problem", problem)
    if prompt_style == "qwen":
        return [
            {"role": "system", "content": MATH_INSTRUCTION},
            {"role": "user", "content": problem},
        ]
    if prompt_style == "r1":
        return [{"role": "user", "content": f"{problem}\n{MATH_INSTRUCTION}"}]
    raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")


def sql_messages(schema: str, question: str, evidence: str | None = None) -> list[dict[str, str]]:
    """Text-to-SQL prompt: the database schema (CREATE TABLE statements), the question and, for
    BIRD, its external-knowledge evidence; the answer goes in a ```sql block."""
    schema = _check_text("schema", schema)
    question = _check_text("question", question)
    parts = [f"Database schema:\n{schema}", f"Question: {question}"]
    if evidence is not None and str(evidence).strip():
        parts.append(f"External knowledge: {str(evidence).strip()}")
    parts.append(SQL_INSTRUCTION)
    return [{"role": "user", "content": "\n\n".join(parts)}]


def format_choices(choices: Sequence[str]) -> str:
    if not choices or len(choices) > len(CHOICE_LETTERS):
        raise ValueError(f"choices must hold 1..{len(CHOICE_LETTERS)} options, got {len(choices or [])}")
    return "\n".join(f"{CHOICE_LETTERS[i]}. {str(c).strip()}" for i, c in enumerate(choices))


def geometry_messages(problem: str, choices: Sequence[str], image_tag: str = IMAGE_TAG) -> list[dict[str, str]]:
    """Geometry3K prompt: the diagram (``image_tag`` marks where the image goes; OpenRLHF expands
    ``<image>``), the problem text and the lettered choices; the letter goes in \\boxed{}."""
    problem = _check_text("problem", problem)
    content = f"{image_tag}{problem}\nChoices:\n{format_choices(choices)}\n{GEOMETRY_INSTRUCTION}"
    return [{"role": "user", "content": content}]
