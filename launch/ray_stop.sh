#!/usr/bin/env bash
# Stop the Ray node (head or worker) that launch/ray_head.sh or launch/ray_worker.sh started with this
# RAY_TMP_DIR, by its process ids (recorded in ${RAY_TMP_DIR}/head.pids or worker.pids), and
# everything it started. Unlike `ray stop`, other Ray instances on this machine are left alone.
source "$(dirname "$0")/common.sh"
python "${LAUNCH_DIR}/ray_processes.py" stop "${RAY_TMP_DIR}"
