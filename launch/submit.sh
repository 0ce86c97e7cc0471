#!/usr/bin/env bash
# Submit one training config to the running Ray cluster (from the repository root).
#   launch/submit.sh configs/math/qwen2.5-math-1.5b-instruct/apmpo.yaml [--set key=value ...]
# The repository (without data/, models/, outputs/) is uploaded as the job's working directory.
# Relative model/data/output paths of the config are resolved against this checkout
# (APMPO_PATH_BASE), so they must be reachable at the same path on every node (shared filesystem
# for multi-node runs); or give absolute paths with --set model.path=/models/... etc.
source "$(dirname "$0")/common.sh"
CONFIG="${1:?usage: launch/submit.sh CONFIG [--set key=value ...]}"
shift
cd "${REPO_ROOT}"
export APMPO_PATH_BASE="${APMPO_PATH_BASE:-${REPO_ROOT}}"
# Validate locally first with OpenRLHF's own parser and checks (nothing is started).
python -m apmpo_openrlhf.train --config "${CONFIG}" --dry-run "$@" > /dev/null
RUNTIME_ENV="$(python - <<'PY'
import json, os
print(json.dumps({
    "excludes": [".git", "data", "models", "outputs", ".venv", "*.safetensors", "*.bin", "*.pt"],
    "env_vars": {"APMPO_PATH_BASE": os.environ["APMPO_PATH_BASE"]},
}))
PY
)"
ray job submit \
  --address "http://${RAY_DASHBOARD_HOST}:${RAY_DASHBOARD_PORT}" \
  --working-dir . \
  --runtime-env-json "${RUNTIME_ENV}" \
  -- python -m apmpo_openrlhf.train --config "${CONFIG}" "$@"
