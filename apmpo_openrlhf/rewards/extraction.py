"""Pull the final answer out of untrusted model output (pure string work, linear time)."""

from __future__ import annotations

import re
from typing import NamedTuple

# Longest answer we hand to the parser; a longer "answer" is not an answer and would only cost time.
MAX_ANSWER_CHARS = 1000
# Without a \boxed{}, only the end of the response is searched for an answer.
FALLBACK_TAIL_CHARS = 2000

_BOX_COMMAND_RE = re.compile(r"\\(?:boxed|fbox)")
_SPACE_FORM_RE = re.compile(r"\s+([^\s$]+)")


class Box(NamedTuple):
    start: int  # index of the backslash of \boxed / \fbox
    end: int  # index just past the box (its closing brace, or its token in the "\boxed 5" form)
    content: str


def _closing_braces(text: str) -> dict[int, int]:
    """Index of each '{' -> index of its '}' (backslash-escaped characters skipped), in one pass."""
    closing: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closing[stack.pop()] = i
        i += 1
    return closing


def boxes(text: str) -> list[Box]:
    """Every complete ``\\boxed{...}`` / ``\\fbox{...}`` (and ``\\boxed x``) of ``text``, by start.

    One pass over the text plus one per box command (no rescans): a response full of unterminated
    ``\\boxed{`` costs linear time, not quadratic.
    """
    closing: dict[int, int] | None = None
    found: list[Box] = []
    n = len(text)
    for m in _BOX_COMMAND_RE.finditer(text):
        after = m.end()
        j = after
        while j < n and text[j] == " ":
            j += 1
        if j < n and text[j] == "{":
            if closing is None:
                closing = _closing_braces(text)
            close = closing.get(j)
            if close is not None:
                found.append(Box(m.start(), close + 1, text[j + 1 : close]))
        elif m.group() == "\\boxed" and after < n and text[after] == " ":
            # "\boxed 5" form (seen in some model outputs): the token after the space.
            token = _SPACE_FORM_RE.match(text, after)
            if token:
                found.append(Box(m.start(), token.end(), token.group(1)))
    return found


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed x``), else None.

    "Last" is by start position: in ``\\boxed{\\boxed{1}}`` it is the inner box.
    """
    found = boxes(text)
    return found[-1].content if found else None


def outer_boxed(text: str) -> list[str]:
    """The answer of each box not nested in another one, in order: a box holding boxes gives its
    last inner box (the content :func:`last_boxed` reads for that box alone)."""
    answers: list[str] = []
    outer_end = -1
    for box in boxes(text):
        if box.start < outer_end:
            answers[-1] = box.content  # nested: the later-starting box is the answer of this one
        else:
            answers.append(box.content)
            outer_end = box.end
    return answers


def strip_markdown_emphasis(text: str) -> str:
    """``**73**`` -> ``73`` (math-verify misreads markdown bold)."""
    return re.sub(r"\*\*(.+?)\*\*", r"\1", text)


# ----------------------------------------------------------------------------- answer parts
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![a-zA-Z])")
_OPENERS, _CLOSERS = "([{", ")]}"
_DOLLAR_RE = re.compile(r"(?<!\\)\$")  # math delimiters, not the \$ of an amount
# "x = 1 or x = 2", "-2 \\text{ or } -12": the words separate parts like a comma (inside a bracket
# the comma they become is inside it too, so "\\text{3 and 4 apples}" stays one part).
_WORD_SEPARATOR_RE = re.compile(r"\\(?:text|mbox|textrm)\{\s*(?:or|and)\s*\}|(?<=\s)(?:or|and)(?=\s)")
_PLUS_MINUS_RE = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")
# 1,000 / 58,500 / 10,\!080 / \$32,\!348 / 11,\! 111,\! 100: one number with thousands separators.
_THOUSANDS_RE = re.compile(r"^(?:\\?\$)?[+-]?\d{1,3}(?:,(?:\\!\s*)?\d{3})+(?:\.\d+)?$")


def _split_top_level(text: str) -> tuple[list[str], bool]:
    """``text`` cut at the commas and semicolons outside any bracket ((), [], {}, \\{\\}), and
    whether the text is one bracketed group from its first character to its last."""
    parts: list[str] = []
    depth, start, i, n = 0, 0, 0, len(text)
    one_group = n > 0
    while i < n:
        ch = text[i]
        step = 1
        if ch == "\\":
            step = 2
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt == "{":
                depth += 1
            elif nxt == "}":
                depth = max(0, depth - 1)
        elif ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            depth = max(0, depth - 1)
        elif ch in ",;" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        if depth == 0 and i + step < n:
            one_group = False  # the first group closed before the end
        i += step
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()], one_group


def answer_parts(answer: str) -> list[str]:
    """The distinct parts of an answer: ``1, 2, 3``, ``\\{1,2,3\\}``, ``{1,2,3}``, ``-2 \\text{ or } 5``
    and ``1 \\pm \\sqrt{2}`` have several; a point or interval (``(1,2)``, ``[0,1)``), a union, a
    matrix and ``10,\\!080`` are one answer. Repeated parts count once (``-2, -2`` is one). A text
    with boxes is read by its last box.

    Only brackets and separators are read (pure string work); math-verify decides equivalence.
    """
    text = _DOLLAR_RE.sub("", answer).strip()
    found = outer_boxed(text)
    if found:  # a boxed answer (a gold given as a worked solution too): its last box
        text = found[-1].strip()
    text = _LEFT_RIGHT_RE.sub("", text).strip()
    if _THOUSANDS_RE.match(text):
        return [text]
    text = _WORD_SEPARATOR_RE.sub(",", text)
    parts, one_group = _split_top_level(text)
    if one_group and text.startswith("\\{") and text.endswith("\\}"):
        parts = _split_top_level(text[2:-2])[0]  # a set: its elements
    elif one_group and text.startswith("{") and text.endswith("}"):
        parts = _split_top_level(text[1:-1])[0]  # a TeX group: {1,2,3} reads 1,2,3
    distinct: dict[str, str] = {}
    for part in parts or [text]:
        pm = _PLUS_MINUS_RE.search(part)
        # "a \pm b" is two values (math-verify reads it as the set {a - b, a + b})
        values = [part[: pm.start()] + sign + part[pm.end() :] for sign in "+-"] if pm else [part]
        for value in values:
            distinct.setdefault(re.sub(r"\s+", "", value), value)
    return list(distinct.values())


# ----------------------------------------------------------------------------- SQL
_SQL_BLOCK = re.compile(r"```[ \t]*(?:sql|sqlite|SQL)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_sql(response: str) -> str:
    """The SQL query in a response: the last ```sql fenced block, else the whole text.

    An unterminated final fence (truncated generation) counts as a block up to the end.
    """
    blocks = _SQL_BLOCK.findall(response)
    if blocks:
        return blocks[-1].strip()
    m = re.search(r"```[ \t]*(?:sql|sqlite|SQL)[ \t]*\n(.*)\Z", response, re.DOTALL)
    if m:
        return m.group(1).strip()
    return response.strip()
