"""GraderPool: hard timeouts kill and replace one worker, errors travel back, threads share it,
shutdown leaves no process behind."""

from __future__ import annotations

import operator
import os
import threading
import time

import pytest

from apmpo_openrlhf.rewards.grader_pool import GraderPool, GradingTimeout, GradingWorkerError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def pool():
    p = GraderPool(2)
    yield p
    p.shutdown()


def test_call_returns_result_and_reraises_errors(pool):
    assert pool.call(operator.add, 2, 3) == 5
    assert pool.call(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
    with pytest.raises(GradingWorkerError, match="ZeroDivisionError"):
        pool.call(operator.truediv, 1, 0)
    # The worker that raised is still usable.
    assert pool.call(operator.mul, 4, 5) == 20


def test_timeout_kills_only_that_worker_and_replaces_it(pool):
    before = set(pool.alive_pids())
    assert len(before) == 2
    with pytest.raises(GradingTimeout):
        pool.call(time.sleep, 60, timeout=0.5)
    after = set(pool.alive_pids())
    assert len(after) == 2
    assert len(before - after) == 1, "exactly the stuck worker is replaced"
    (killed,) = before - after
    assert not _pid_alive(killed)
    assert pool.stats["timeouts"] == 1
    assert pool.call(operator.add, 1, 1) == 2


def test_worker_death_is_reported_and_replaced(pool):
    with pytest.raises(GradingWorkerError, match="died"):
        pool.call(os._exit, 3)
    assert len(pool.alive_pids()) == 2
    assert pool.call(operator.add, 2, 2) == 4


def test_concurrent_threads_get_their_own_results(pool):
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            if i == 7:
                with pytest.raises(GradingTimeout):
                    pool.call(time.sleep, 30, timeout=0.3)
                results[i] = -1
            else:
                results[i] = pool.call(operator.mul, i, i)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert results == {i: (-1 if i == 7 else i * i) for i in range(24)}


def test_map_keeps_order_and_maps_errors(pool):
    out = pool.map(operator.floordiv, [(10, 2), (1, 0), (9, 3)], on_error=lambda exc: "err")
    assert out == [5, "err", 3]
    with pytest.raises(GradingWorkerError):
        pool.map(operator.floordiv, [(1, 0)])


def test_shutdown_stops_all_workers():
    p = GraderPool(2)
    pids = p.alive_pids()
    assert len(pids) == 2 and all(_pid_alive(pid) for pid in pids)
    p.shutdown()
    p.shutdown()  # idempotent
    assert not any(_pid_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="shut down"):
        p.call(operator.add, 1, 1)


def test_invalid_size():
    with pytest.raises(ValueError, match="n_workers"):
        GraderPool(0)


def _wait_dead(pids, within_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _pid_alive(pid)]
        time.sleep(0.1)
    return alive


@pytest.mark.parametrize("ending", ["normal_exit", "sigkill"])
def test_no_worker_outlives_the_interpreter(tmp_path, ending):
    import signal
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = (
        "import sys, time, operator\n"
        f"sys.path.insert(0, {repo!r})\n"
        "from apmpo_openrlhf.rewards.grader_pool import default_pool\n"
        "p = default_pool(); p.call(operator.add, 1, 2)\n"
        "print(' '.join(map(str, p.alive_pids())), flush=True)\n"
        + ("time.sleep(60)\n" if ending == "sigkill" else "")
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "APMPO_GRADER_WORKERS": "2"})
    pids = [int(x) for x in proc.stdout.readline().split()]
    assert len(pids) == 2
    if ending == "sigkill":
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # Orphans are re-parented (to init or a subreaper) and exit via their parent watchdog.
    assert _wait_dead(pids) == []
