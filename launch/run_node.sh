#!/usr/bin/env bash
# One config on one 4-GPU node: start a Ray head on loopback, submit the config, wait for it.
#   launch/run_node.sh configs/math/qwen2.5-math-1.5b-instruct/apmpo.yaml [--set key=value ...]
# Outputs (checkpoints, TensorBoard, final model) go to the config's output_dir. A crashed run
# resumes from its latest checkpoint when started again (checkpoint.resume: true).
# The head is left running for the next config; stop it with launch/ray_stop.sh (this head only,
# by the process ids launch/ray_head.sh recorded).
source "$(dirname "$0")/common.sh"
CONFIG="${1:?usage: launch/run_node.sh CONFIG [--set key=value ...]}"
shift
if ! ray status --address "127.0.0.1:${RAY_PORT}" >/dev/null 2>&1; then
  RAY_HEAD_IP=127.0.0.1 "$(dirname "$0")/ray_head.sh"
fi
exec "$(dirname "$0")/submit.sh" "${CONFIG}" "$@"
