#!/usr/bin/env bash
# Evaluate the final model of every training run of an experiment (one subfolder per method x seed),
# optionally the base model too, then write OUT_ROOT/report.{md,csv,json} (paper Table 1 / Table 5).
# usage: evaluation/scripts/eval_experiment.sh EXPERIMENT_DIR OUT_ROOT [BASE_MODEL|-] [evaluation.run options...]
# e.g.:  evaluation/scripts/eval_experiment.sh outputs/math/qwen2.5-math-1.5b results/qwen-math \
#            /models/Qwen2.5-Math-1.5B-Instruct --n 16 --tensor-parallel-size 4
# Rerun the same command after an interruption: finished work is kept.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,7p' "$0" >&2
    exit 2
fi
# The harness is imported from this checkout; paths stay relative to the caller's directory.
repo_root=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}"
exp_dir=$1 out_root=$2
shift 2
base=()
if [ $# -gt 0 ]; then
    if [ "$1" != "-" ]; then base=(--base "$1"); fi
    shift
fi
exec "${PYTHON:-python}" -m evaluation.batch experiment "$exp_dir" "$out_root" "${base[@]}" -- "$@"
