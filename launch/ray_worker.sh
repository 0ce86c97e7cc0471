#!/usr/bin/env bash
# Join this node to a running Ray head (multi-node).
#   RAY_HEAD_IP=10.0.0.1 NODE_IP=10.0.0.2 launch/ray_worker.sh [extra `ray start` flags]
# NODE_IP: this node's address on the private cluster network; a public address is refused.
# Ports: every node of a cluster must reach the others' Ray ports on the private network
# (docs/openrlhf.md, "Multi-node and security"); give them with --node-manager-port,
# --object-manager-port, --min-worker-port/--max-worker-port etc. to open a fixed set.
#
# A second node on the head's machine (RAY_HEAD_IP=127.0.0.1 NODE_IP=127.0.0.1, for testing the
# multi-node path on one host): Ray accepts it only with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 (on
# the head too), which makes its processes listen on every interface, so this script then requires
# a network namespace with only loopback (`unshare --net`), a RAY_TMP_DIR of its own and ports that
# differ from the head's (the extra flags above).
# Stop it with RAY_TMP_DIR=<its RAY_TMP_DIR> launch/ray_stop.sh (by its recorded process ids).
source "$(dirname "$0")/common.sh"
: "${NODE_IP:?set NODE_IP to the address of this node on the private cluster network}"
head_kind="$(cluster_address RAY_HEAD_IP "${RAY_HEAD_IP}")"
node_kind="$(cluster_address NODE_IP "${NODE_IP}")"
if [[ "${head_kind}" == "loopback" || "${node_kind}" == "loopback" ]]; then
  if [[ "${head_kind}" != "${node_kind}" ]]; then
    echo "error: RAY_HEAD_IP=${RAY_HEAD_IP} and NODE_IP=${NODE_IP}: a loopback head takes only loopback nodes" \
         "(set both to private cluster addresses for several machines)" >&2
    exit 2
  fi
  only_loopback_interfaces "a second Ray node on ${NODE_IP} listens on every interface (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1)"
fi
# A worker node is a multi-node cluster by definition (Ray refuses to join one with this set to 0).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1
ray start \
  --address "${RAY_HEAD_IP}:${RAY_PORT}" \
  --node-ip-address "${NODE_IP}" \
  --temp-dir "${RAY_TMP_DIR}" \
  --num-gpus "${NUM_GPUS:-$(nvidia-smi -L 2>/dev/null | wc -l)}" \
  "$@"
python "${LAUNCH_DIR}/ray_processes.py" record "${RAY_TMP_DIR}" --role worker
echo "Stop it with: RAY_TMP_DIR=${RAY_TMP_DIR} launch/ray_stop.sh (this node only, by process id)"
