"""Two Ray nodes on this machine, a job submitted to them, placement read back; for test_colocated.py
(not a test module). Run it inside a network namespace that has only loopback (``unshare --net``):

    python two_node_cluster.py RESULT.json HEAD_TMP WORKER_TMP CONFIG [--set key=value ...]

Brings ``lo`` up, starts the head (launch/ray_head.sh) and a worker node (launch/ray_worker.sh, own
temporary directory and ports) with one logical GPU each, submits CONFIG with launch/submit.sh
(``ray job submit``), then reads from Ray's state API which node every actor ran on and which sockets
the nodes' processes listened on, and stops both nodes with launch/ray_stop.sh (by process id).
Everything is written to RESULT.json; the caller asserts.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_PORT = 8265  # a namespace of its own: the default ports are free
# Each node's own ports (the head keeps Ray's defaults for the rest).
WORKER_PORTS = ["--node-manager-port", "7001", "--object-manager-port", "7002", "--dashboard-agent-listen-port",
                "7003", "--dashboard-agent-grpc-port", "7004", "--metrics-export-port", "7005",
                "--runtime-env-agent-port", "7006", "--min-worker-port", "7100", "--max-worker-port", "7199"]
HEAD_PORTS = ["--node-manager-port", "6001", "--object-manager-port", "6002", "--dashboard-agent-grpc-port", "6004",
              "--metrics-export-port", "6005", "--runtime-env-agent-port", "6006", "--min-worker-port", "6100",
              "--max-worker-port", "6199"]


def loopback_up() -> None:
    """``ip link set lo up`` (SIOCSIFFLAGS), without needing iproute2."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def run(args: list[str], env: dict, timeout: float, log_file: Path | None = None) -> dict:
    """Run a launch script; the tails of its output, and with ``log_file`` all of it there."""
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if log_file is not None:
        log_file.write_text(proc.stdout + proc.stderr)
    return {"rc": proc.returncode, "out": proc.stdout[-6000:], "err": proc.stderr[-10000:],
            "log": str(log_file) if log_file else None}


def listening_sockets(tmp_dirs: list[str]) -> list[list]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if not any(d in part for d in tmp_dirs for part in proc.info["cmdline"] or ()):
                continue
            for p in [proc, *proc.children(recursive=True)]:
                found += [[c.laddr.ip, c.laddr.port, p.pid] for c in p.net_connections(kind="inet")
                          if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


def main(result_file: str, head_tmp: str, worker_tmp: str, config: str, overrides: list[str]) -> None:
    import psutil

    loopback_up()
    result: dict = {"interfaces": sorted(psutil.net_if_addrs())}
    base = {**os.environ, "RAY_HEAD_IP": "127.0.0.1", "RAY_PORT": "6379", "RAY_DASHBOARD_PORT": str(DASHBOARD_PORT),
            "NUM_GPUS": "1"}
    head_env = {**base, "RAY_TMP_DIR": head_tmp}
    worker_env = {**base, "RAY_TMP_DIR": worker_tmp, "NODE_IP": "127.0.0.1"}
    try:
        result["head"] = run(["launch/ray_head.sh", "--num-cpus", "2", *HEAD_PORTS], head_env, 180)
        result["worker"] = run(["launch/ray_worker.sh", "--num-cpus", "2", *WORKER_PORTS], worker_env, 180)
        if result["head"]["rc"] == 0 and result["worker"]["rc"] == 0:
            result["submit"] = run(["launch/submit.sh", config, *overrides], head_env, 900,
                                   Path(result_file).with_suffix(".submit.log"))
            result["sockets"] = listening_sockets([head_tmp, worker_tmp])
            from ray.util.state import list_actors, list_nodes

            address = f"http://127.0.0.1:{DASHBOARD_PORT}"
            result["nodes"] = [{"node_id": n.node_id, "ip": n.node_ip, "is_head": n.is_head_node,
                                "gpus": n.resources_total.get("GPU")} for n in list_nodes(address=address)]
            result["actors"] = [{"class_name": a.class_name, "node_id": a.node_id, "pid": a.pid, "state": a.state}
                                for a in list_actors(address=address, limit=10000, detail=True)]
    finally:
        result["stop_worker"] = run(["launch/ray_stop.sh"], worker_env, 120)
        result["stop_head"] = run(["launch/ray_stop.sh"], head_env, 120)
        Path(result_file).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
