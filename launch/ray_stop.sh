#!/usr/bin/env bash
# Stop the Ray head that launch/ray_head.sh started with this RAY_TMP_DIR, by its process ids
# (recorded in ${RAY_TMP_DIR}/head.pids), and everything it started. Unlike `ray stop`, other Ray
# instances of the same user on this node are left alone.
source "$(dirname "$0")/common.sh"
python "$(dirname "$0")/ray_processes.py" stop "${RAY_TMP_DIR}"
