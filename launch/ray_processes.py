"""The processes of one Ray node, by process id (``ray stop`` would end every Ray process of the user).

    python launch/ray_processes.py record RAY_TMP_DIR [--role worker]   # after `ray start --temp-dir RAY_TMP_DIR`
    python launch/ray_processes.py stop RAY_TMP_DIR     # SIGTERM, then SIGKILL after a grace period

``record`` writes ``RAY_TMP_DIR/head.pids`` (``worker.pids`` for a worker node): the processes whose
command line names this node's session directory (head: GCS, raylet, dashboard, agents, monitors;
worker: raylet and agents). Each node needs its own RAY_TMP_DIR. ``stop`` ends the recorded
processes and everything they started (the raylet's workers, vLLM's engine processes), children
first found while they are alive.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import psutil

ROLES = ("head", "worker")
GRACE_S = 15.0


def pids_file(tmp_dir: Path, role: str) -> Path:
    return tmp_dir / f"{role}.pids"


def session_dir(tmp_dir: Path) -> Path:
    latest = tmp_dir / "session_latest"
    if not latest.exists():
        raise SystemExit(f"error: no Ray session under {tmp_dir} (was `ray start --temp-dir {tmp_dir}` run?)")
    return latest.resolve()


def node_processes(session: Path) -> list[psutil.Process]:
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


def record(tmp_dir: Path, role: str = "head") -> list[int]:
    pids = sorted(p.pid for p in node_processes(session_dir(tmp_dir)))
    pids_file(tmp_dir, role).write_text("".join(f"{pid}\n" for pid in pids))
    return pids


def stop(tmp_dir: Path) -> int:
    files = [pids_file(tmp_dir, role) for role in ROLES if pids_file(tmp_dir, role).is_file()]
    if not files:
        raise SystemExit(f"error: no {' or '.join(pids_file(tmp_dir, r).name for r in ROLES)} in {tmp_dir} "
                         "(recorded by launch/ray_head.sh and launch/ray_worker.sh)")
    procs: dict[int, psutil.Process] = {}
    for line in "".join(f.read_text() for f in files).split():
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
    for file in files:
        file.unlink()
    return len(procs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["record", "stop"])
    parser.add_argument("tmp_dir", type=Path, help="the node's --temp-dir (RAY_TMP_DIR)")
    parser.add_argument("--role", choices=ROLES, default="head", help="record: the node's role (names the file)")
    args = parser.parse_args(argv)
    if args.action == "record":
        pids = record(args.tmp_dir, args.role)
        print(f"Ray {args.role} processes: {' '.join(map(str, pids))} (in {pids_file(args.tmp_dir, args.role)})")
    else:
        print(f"stopped {stop(args.tmp_dir)} processes of the Ray node in {args.tmp_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
