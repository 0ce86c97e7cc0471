"""A pool of killable worker processes that runs grading functions under a hard time limit.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one stuck worker; a timeout
there means tearing the whole pool down and losing every other caller's in-flight task. Here each
call borrows one worker exclusively; if the call overruns, only that worker is killed (SIGKILL)
and replaced, and the caller gets :class:`GradingTimeout`. Threads may call concurrently: the
idle-worker queue is the only shared state. Workers die with the parent (socket EOF, a parent
watchdog, ``atexit``), so no process outlives the interpreter.

The function sent to a worker must be picklable by reference (a module-level function).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable, Sequence

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
# Address-space cap per worker: a pathological expression (e.g. 9^{9^{9^{9}}}) fails with
# MemoryError instead of swapping the machine. Sympy + math-verify need well under 1 GiB.
DEFAULT_MEMORY_LIMIT_BYTES = 4 * 1024**3


class GradingTimeout(TimeoutError):
    """The grading call exceeded its time limit; the worker running it was killed."""


class GradingWorkerError(RuntimeError):
    """The worker died during the call (crash, killed), or the function raised (its message)."""


class _Worker:
    """One ``python -m apmpo_openrlhf.rewards._grader_worker`` process on a socket pair.

    A fresh interpreter (not multiprocessing's spawn/fork): spawn would re-run the caller's
    ``__main__`` (a Ray worker script, a user script without a main guard), and forking a process
    that runs threads (vLLM, Ray) is unsafe.
    """

    def __init__(self, memory_limit: int | None, warm_up: bool = False):
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        # Single-threaded graders: no BLAS/OpenMP thread pools (they also inflate the address space).
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        # The child must import this very package (worktree, editable install, or sys.path hack).
        env["PYTHONPATH"] = os.pathsep.join(p for p in [*sys.path, env.get("PYTHONPATH", "")] if p)
        cmd = [
            sys.executable, "-m", "apmpo_openrlhf.rewards._grader_worker",
            str(child_sock.fileno()), str(memory_limit or 0), str(os.getpid()), "1" if warm_up else "0",
        ]
        self.process = subprocess.Popen(cmd, pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL)
        child_sock.close()
        self.conn = Connection(parent_sock.detach())

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort during teardown
            pass
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass

    def stop(self) -> None:
        try:
            self.conn.send(None)
            self.process.wait(timeout=2)
        except Exception:  # noqa: BLE001 - busy or dead: kill it
            pass
        self.kill()


class GraderPool:
    """``n_workers`` processes; :meth:`call` runs one function under a timeout, :meth:`map` many.

    ``memory_limit_bytes`` caps each worker's address space (None: no cap). ``warm_up``: each
    worker imports math-verify and parses once when it starts (in the background), so that the
    first task of a fresh or replaced worker is not charged for it.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        *,
        memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT_BYTES,
        warm_up: bool = False,
    ):
        if n_workers is None:
            n_workers = max(1, min(4, os.cpu_count() or 1))
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.n_workers = n_workers
        self._memory_limit = memory_limit_bytes
        self._warm_up = warm_up
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.stats = {"calls": 0, "timeouts": 0, "worker_deaths": 0}
        for _ in range(n_workers):
            self._idle.put(self._spawn())
        atexit.register(self.shutdown)

    def _spawn(self) -> _Worker:
        worker = _Worker(self._memory_limit, self._warm_up)
        with self._lock:
            self._all.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            closed = self._closed
        if not closed:
            self._idle.put(self._spawn())

    def call(self, fn: Callable, *args: Any, timeout: float = DEFAULT_TIMEOUT_S, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker; raise GradingTimeout after ``timeout`` seconds.

        The timeout counts from when a worker is free, not from when the call was queued.
        A function that raises re-raises here as GradingWorkerError with its message.
        """
        if self._closed:
            raise RuntimeError("GraderPool is shut down")
        worker = self._idle.get()
        with self._lock:
            self.stats["calls"] += 1
        try:
            worker.conn.send((fn, args, kwargs))
            ready = worker.conn.poll(timeout)
            if ready:
                status, payload = worker.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            with self._lock:
                self.stats["worker_deaths"] += 1
            self._retire(worker)
            raise GradingWorkerError(f"grading worker died: {type(exc).__name__}: {exc}") from None
        except BaseException:
            self._retire(worker)
            raise
        if not ready:
            with self._lock:
                self.stats["timeouts"] += 1
            self._retire(worker)
            raise GradingTimeout(f"grading exceeded {timeout:g} s; worker killed and replaced")
        self._idle.put(worker)
        if status == "err":
            raise GradingWorkerError(payload)
        return payload

    def map(
        self,
        fn: Callable,
        arg_tuples: Iterable[Sequence[Any]],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> list[Any]:
        """``[fn(*args) for args in arg_tuples]`` across all workers, in input order.

        Errors and timeouts raise unless ``on_error`` maps the exception to a result value.
        """
        items = list(arg_tuples)

        def one(args: Sequence[Any]) -> Any:
            try:
                return self.call(fn, *args, timeout=timeout)
            except (GradingTimeout, GradingWorkerError) as exc:
                if on_error is None:
                    raise
                return on_error(exc)

        # More threads than workers: a worker never idles while its next task is being sent.
        with ThreadPoolExecutor(max_workers=3 * self.n_workers, thread_name_prefix="grader-map") as ex:
            return list(ex.map(one, items))

    def shutdown(self) -> None:
        """Stop every worker (idempotent). Calls in flight get GradingWorkerError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.stop()

    def __enter__(self) -> "GraderPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def alive_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._all if w.is_alive()]


WORKERS_ENV = "APMPO_GRADER_WORKERS"
_default_pool: GraderPool | None = None
_default_lock = threading.Lock()


def default_pool() -> GraderPool:
    """The process-wide pool used by the reward functions (created on first use).

    Size: ``APMPO_GRADER_WORKERS`` (default: min(4, CPU count)).
    """
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            env = os.environ.get(WORKERS_ENV)
            try:
                n = int(env) if env else None
            except ValueError:
                raise ValueError(f"{WORKERS_ENV} must be an integer, got {env!r}") from None
            _default_pool = GraderPool(n, warm_up=True)  # the math graders' pool
        return _default_pool


def shutdown_default_pool() -> None:
    global _default_pool
    with _default_lock:
        if _default_pool is not None:
            _default_pool.shutdown()
            _default_pool = None
