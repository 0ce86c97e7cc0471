#!/usr/bin/env bash
# Join this node to a running Ray head (multi-node).
#   RAY_HEAD_IP=10.0.0.1 NODE_IP=10.0.0.2 launch/ray_worker.sh [extra `ray start` flags]
# NODE_IP: this node's address on the private cluster network (never a public interface).
source "$(dirname "$0")/common.sh"
if [[ "${RAY_HEAD_IP}" == "127.0.0.1" ]]; then
  echo "error: set RAY_HEAD_IP to the head node's private address" >&2
  exit 2
fi
: "${NODE_IP:?set NODE_IP to this node's private address}"
ray start \
  --address "${RAY_HEAD_IP}:${RAY_PORT}" \
  --node-ip-address "${NODE_IP}" \
  --temp-dir "${RAY_TMP_DIR}" \
  --num-gpus "${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}" \
  "$@"
