"""The processes of one Ray head, by process id (``ray stop`` would end every Ray process of the user).

    python launch/ray_processes.py record RAY_TMP_DIR   # after `ray start --head --temp-dir RAY_TMP_DIR`
    python launch/ray_processes.py stop RAY_TMP_DIR     # SIGTERM, then SIGKILL after a grace period

``record`` writes ``RAY_TMP_DIR/head.pids``: the processes whose command line names this head's
session directory (GCS, raylet, dashboard, agents, monitors). ``stop`` ends them and everything they
started (the raylet's workers, vLLM's engine processes), children first found while they are alive.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psutil

PIDS_FILE = "head.pids"
GRACE_S = 15.0


def session_dir(tmp_dir: Path) -> Path:
    latest = tmp_dir / "session_latest"
    if not latest.exists():
        raise SystemExit(f"error: no Ray session under {tmp_dir} (was `ray start --temp-dir {tmp_dir}` run?)")
    return latest.resolve()


def head_processes(session: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            if proc.info["uids"] and proc.info["uids"].real != os.getuid():
                continue
            if any(str(session) in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def record(tmp_dir: Path) -> list[int]:
    pids = sorted(p.pid for p in head_processes(session_dir(tmp_dir)))
    (tmp_dir / PIDS_FILE).write_text("".join(f"{pid}\n" for pid in pids))
    return pids


def stop(tmp_dir: Path) -> int:
    pids_file = tmp_dir / PIDS_FILE
    if not pids_file.is_file():
        raise SystemExit(f"error: {pids_file} not found (record it after starting the head)")
    procs: dict[int, psutil.Process] = {}
    for line in pids_file.read_text().split():
        try:
            proc = psutil.Process(int(line))
            for p in [proc, *proc.children(recursive=True)]:
                procs[p.pid] = p
        except psutil.NoSuchProcess:
            continue
    for proc in procs.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    pids_file.unlink()
    return len(procs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["record", "stop"])
    parser.add_argument("tmp_dir", type=Path, help="the head's --temp-dir (RAY_TMP_DIR)")
    args = parser.parse_args(argv)
    if args.action == "record":
        pids = record(args.tmp_dir)
        print(f"Ray head processes: {' '.join(map(str, pids))} (in {args.tmp_dir / PIDS_FILE})")
    else:
        print(f"stopped {stop(args.tmp_dir)} processes of the Ray head in {args.tmp_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
