#!/usr/bin/env bash
# Evaluate every checkpoint of one training run, then write OUT_ROOT/report.{md,csv,json}.
# usage: evaluation/scripts/eval_checkpoints.sh RUN_DIR OUT_ROOT [evaluation.run options...]
# e.g.:  evaluation/scripts/eval_checkpoints.sh outputs/math/apmpo_seed0 results/apmpo_seed0 \
#            --benchmarks math500,aime24,aime25,amc23,minerva,olympiadbench --n 16 --tensor-parallel-size 4
# Rerun the same command after an interruption: finished work is kept.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,6p' "$0" >&2
    exit 2
fi
# The harness is imported from this checkout; paths stay relative to the caller's directory.
repo_root=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}"
run_dir=$1 out_root=$2
shift 2
exec "${PYTHON:-python}" -m evaluation.batch checkpoints "$run_dir" "$out_root" -- "$@"
