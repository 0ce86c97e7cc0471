#!/usr/bin/env bash
# GPU smoke test of the OpenRLHF path: a few steps of a small model on ONE GPU of a real cluster
# node with the full stack (requirements.txt: CUDA torch, vLLM, DeepSpeed, Ray, flash-attn).
#   MODEL=/models/Qwen2.5-0.5B-Instruct launch/gpu_smoke_openrlhf.sh [--set key=value ...]
# Prepares 64 MATH prompts, starts a loopback Ray head if none runs, trains 3 steps of APMPO with
# ZeRO-3 + one colocated vLLM engine (sleep mode), evaluation at step 0, and writes the final
# Hugging Face model under outputs/gpu_smoke_openrlhf/. Not runnable on the CPU-only machines.
source "$(dirname "$0")/common.sh"
: "${MODEL:?set MODEL to a small local Hugging Face model directory (e.g. Qwen2.5-0.5B-Instruct)}"
cd "${REPO_ROOT}"
PROMPTS=outputs/gpu_smoke_openrlhf/prompts
python -m apmpo_openrlhf.data math --out "${PROMPTS}" --benchmarks math_train,math500 --limit 64
if ! ray status --address "127.0.0.1:${RAY_PORT}" >/dev/null 2>&1; then
  NUM_GPUS=1 RAY_HEAD_IP=127.0.0.1 "$(dirname "$0")/ray_head.sh"
fi
exec "$(dirname "$0")/submit.sh" configs/math/qwen2.5-math-1.5b-instruct/apmpo.yaml \
  --set name=gpu-smoke-openrlhf --set output_dir=outputs/gpu_smoke_openrlhf \
  --set model.path="${MODEL}" \
  --set data.train_path="${PROMPTS}/math_train.jsonl" --set data.eval_path="${PROMPTS}/math500.jsonl" \
  --set eval.at_step0=true --set max_steps=3 \
  --set rollout.prompts_per_step=8 --set rollout.n_samples_per_prompt=4 --set rollout.max_new_tokens=512 \
  --set train.train_batch_size=16 --set train.micro_batch_size=4 \
  --set openrlhf.num_gpus_per_node=1 --set openrlhf.vllm_num_engines=1 \
  --set openrlhf.vllm_gpu_memory_utilization=0.4 --set openrlhf.rollout_micro_batch_size=4 \
  --set checkpoint.save_steps=2 \
  "$@"
