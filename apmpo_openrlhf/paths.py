"""Where benchmark and training data live: one configurable data directory.

Resolution order: an explicit argument (``--data-dir``), the ``APMPO_DATA_DIR`` environment
variable, then ``./data`` under the current directory. The layout is the one documented in the
README ("Data"): ``math_eval/<bench>/test.jsonl``, ``math_train/train.jsonl``, ``sql/spider``,
``sql/bird``, ``geometry3k/<split>/<id>/data.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "APMPO_DATA_DIR"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path("data")


def require_path(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """Return ``path`` as a Path, or raise FileNotFoundError saying what was expected there."""
    p = Path(path).expanduser()
    if not p.exists():
        msg = f"{what} not found: {p}"
        if hint:
            msg += f" ({hint})"
        raise FileNotFoundError(msg)
    return p
