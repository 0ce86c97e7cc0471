"""Pull the final answer out of untrusted model output (pure string work, linear time)."""

from __future__ import annotations

import re

_BOXED_COMMANDS = ("\\boxed", "\\fbox")
# Longest answer we hand to the parser; a longer "answer" is not an answer and would only cost time.
MAX_ANSWER_CHARS = 1000
# Without a \boxed{}, only the end of the response is searched for an answer.
FALLBACK_TAIL_CHARS = 2000


def _matching_brace(text: str, open_idx: int) -> int | None:
    """Index of the '}' closing the '{' at ``open_idx`` (backslash-escaped braces skipped)."""
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed x``), else None."""
    best_pos = -1
    best: str | None = None
    for cmd in _BOXED_COMMANDS:
        start = len(text)
        while True:
            pos = text.rfind(cmd, 0, start)
            if pos < 0 or pos <= best_pos:
                break
            after = pos + len(cmd)
            rest = text[after:]
            stripped = rest.lstrip(" ")
            if stripped.startswith("{"):
                open_idx = after + (len(rest) - len(stripped))
                close = _matching_brace(text, open_idx)
                if close is not None:
                    best_pos, best = pos, text[open_idx + 1 : close]
                    break
            elif cmd == "\\boxed" and rest.startswith(" "):
                # "\boxed 5" form (seen in some model outputs): the token after the space.
                m = re.match(r"\s+([^\s$]+)", rest)
                if m:
                    best_pos, best = pos, m.group(1)
                    break
            start = pos  # unterminated or unrelated (e.g. \boxedfoo): look further left
    return best


def strip_markdown_emphasis(text: str) -> str:
    """``**73**`` -> ``73`` (math-verify misreads markdown bold)."""
    return re.sub(r"\*\*(.+?)\*\*", r"\1", text)


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
