#!/usr/bin/env bash
# Start the Ray head on this node.
#   launch/ray_head.sh [extra `ray start` flags]
# The dashboard / job API listen on ${RAY_DASHBOARD_HOST}:${RAY_DASHBOARD_PORT} (127.0.0.1:8265 by
# default: reach it from elsewhere through `ssh -L 8265:127.0.0.1:8265 head`). For a multi-node
# cluster set RAY_HEAD_IP to the head's address on the private cluster network (a public address is
# refused). On a machine without GPU, NUM_GPUS=3 gives OpenRLHF's placement groups logical GPU slots
# (one actor, one reference model, one vLLM engine in configs/local/openrlhf_cpu.yaml, all on the CPU).
# A loopback head (the default) keeps every socket on 127.0.0.1 and still takes a second node of
# this machine (launch/ray_worker.sh with RAY_HEAD_IP=127.0.0.1, in a namespace with only loopback).
source "$(dirname "$0")/common.sh"
head_kind="$(cluster_address RAY_HEAD_IP "${RAY_HEAD_IP}")"
if [[ "${head_kind}" == "loopback" ]]; then
  # Ray binds to 127.0.0.1 only with this off (one node); a node on another address cannot join.
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER:-0}"
  if [[ "${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER}" != "0" ]]; then
    only_loopback_interfaces "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=${RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER} makes a loopback head listen on every interface"
  fi
fi
ray start --head \
  --node-ip-address "${RAY_HEAD_IP}" \
  --port "${RAY_PORT}" \
  --dashboard-host "${RAY_DASHBOARD_HOST}" \
  --dashboard-port "${RAY_DASHBOARD_PORT}" \
  --temp-dir "${RAY_TMP_DIR}" \
  --num-gpus "${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}" \
  "$@"
echo "Ray head: ${RAY_HEAD_IP}:${RAY_PORT}; job API: http://${RAY_DASHBOARD_HOST}:${RAY_DASHBOARD_PORT}"
python "${LAUNCH_DIR}/ray_processes.py" record "${RAY_TMP_DIR}"
echo "Stop it with: RAY_TMP_DIR=${RAY_TMP_DIR} launch/ray_stop.sh (this node only, by process id)"
