"""Entry point of one grading worker process (started by grader_pool.GraderPool; not for users).

Usage: python -m apmpo_openrlhf.rewards._grader_worker SOCKET_FD MEMORY_LIMIT_BYTES PARENT_PID [WARM_UP]
Loop: receive (fn, args, kwargs) over the socket, reply ("ok", result) or ("err", text);
``None`` or EOF ends the worker. Runs in its main thread, so SIGALRM timeouts (math-verify) work.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from multiprocessing.connection import Connection


def _limit_memory(limit: int) -> None:
    if limit <= 0:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # pragma: no cover - platform dependent
        pass


def _exit_with_parent(parent_pid: int) -> None:
    # A SIGKILLed parent cannot clean up; exit as soon as we are re-parented.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _warm_up() -> None:
    """Import math-verify and parse once before the first task: the first LaTeX parse of a process
    builds the ANTLR parser (0.4 s idle, seconds under load), which would otherwise count against
    the first task's time limits (math-verify's 1-2 s soft limits would fail the gold's parse)."""
    try:
        from math_verify import parse

        parse("$\\frac{1}{2}$", parsing_timeout=None)
    except Exception:  # noqa: BLE001 - best effort: the task itself reports any real failure
        pass


def serve(conn: Connection) -> None:
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            fn, args, kwargs = task
            reply = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - report everything, MemoryError included
            reply = ("err", f"{type(exc).__name__}: {exc}"[:2000])
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


def main(argv: list[str]) -> None:
    fd, memory_limit, parent_pid = int(argv[0]), int(argv[1]), int(argv[2])
    warm_up = len(argv) > 3 and argv[3] == "1"
    _limit_memory(memory_limit)
    # The caller reports timeouts with a reason; math-verify's own per-timeout warnings are noise.
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    if warm_up:
        _warm_up()
    serve(Connection(fd))


if __name__ == "__main__":
    main(sys.argv[1:])
