"""Per-GPU peak memory of the OpenRLHF layout, estimated from the config (``--dry-run`` prints it).

The main buffers, per GPU, in each phase of a step (OPENRLHF_NOTES: the colocated call order):

* ZeRO shards of the actor: parameters (param dtype), gradients (fp32) and AdamW's fp32 master
  weights, first and second moments, divided over the actor ranks as the ZeRO stage divides them
  (stage 3: all three; 2: gradients and optimizer; 1: optimizer; ``adam_offload`` keeps the
  optimizer on the CPU); with ``ds_enable_sleep`` only the parameters stay on the GPU outside
  training. The reference model (``algorithm.kl_beta > 0``): ZeRO-3 parameter shards, unless
  ``ref_offload``.
* ZeRO-3 gathers parameters for each forward: the largest gathered tensor (the embedding / LM head,
  V x H) twice, for DeepSpeed's prefetch.
* Logits of one micro-batch at the maximum length (prompt + response) x vocabulary: OpenRLHF's
  actor casts them to float32 (models/actor.py), so a rollout micro-batch (old and reference
  log-probs, no gradient) holds the param-dtype logits and their float32 copy, and a train
  micro-batch also their float32 gradient in the backward pass.
* Activations of a train micro-batch: with gradient checkpointing each layer's input (B x L x H)
  plus one layer recomputed; without it every layer's.
* vLLM, when colocated: ``vllm_gpu_memory_utilization`` x the GPU's memory while it generates; with
  ``vllm_enable_sleep`` it frees it otherwise (weights to the CPU, KV cache dropped).
* A CUDA context of ~0.5 GB per process on the GPU (actor, reference, engine).

Estimates, not measurements: allocator fragmentation, communication buffers and vLLM's CUDA
graphs come on top, so the warning threshold leaves no margin for them. Model shapes come from
``model.path/config.json`` (a meta-device instantiation counts the parameters exactly) or, where
the model is not on this machine, from a table of the paper's models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GB = 1e9
CUDA_CONTEXT_BYTES = 0.5 * GB
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class ModelShape:
    params: int
    vocab_size: int
    hidden_size: int
    num_layers: int
    intermediate_size: int
    source: str

    @property
    def largest_tensor(self) -> int:
        """Elements of the largest parameter ZeRO-3 gathers at once (embedding / LM head, or a layer's MLP)."""
        return max(self.vocab_size * self.hidden_size, 3 * self.hidden_size * self.intermediate_size)


# The paper's models (their Hugging Face config.json; parameter counts of the released weights).
KNOWN_MODELS: dict[str, ModelShape] = {
    "Qwen2.5-Math-1.5B-Instruct": ModelShape(1_543_714_304, 151_936, 1536, 28, 8960, "table: Qwen2.5-Math-1.5B-Instruct"),
    "Qwen2.5-3B-Instruct": ModelShape(3_085_938_688, 151_936, 2048, 36, 11008, "table: Qwen2.5-3B-Instruct"),
    "DeepSeek-R1-Distill-Qwen-1.5B": ModelShape(1_777_088_000, 151_936, 1536, 28, 8960, "table: DeepSeek-R1-Distill-Qwen-1.5B"),
    "Qwen2.5-Coder-3B-Instruct": ModelShape(3_085_938_688, 151_936, 2048, 36, 11008, "table: Qwen2.5-Coder-3B-Instruct"),
    "Qwen2.5-VL-3B-Instruct": ModelShape(3_754_622_976, 151_936, 2048, 36, 11008, "table: Qwen2.5-VL-3B-Instruct"),
}


def _count_parameters(config) -> int:
    """Exact parameter count of a transformers config, instantiated on the meta device (no memory)."""
    import torch
    import transformers

    auto = transformers.AutoModelForCausalLM
    if getattr(config, "vision_config", None) is not None:
        auto = transformers.AutoModelForImageTextToText
    with torch.device("meta"):
        model = auto.from_config(config)
    return sum(p.numel() for p in model.parameters())


def model_shape(model_path: str | None) -> ModelShape | None:
    """The shape of ``model.path``: from its config.json when present here, else the table by name."""
    if model_path:
        config_file = Path(model_path).expanduser() / "config.json"
        if config_file.is_file():
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(config_file.parent))
            text = getattr(config, "text_config", None) or config
            raw = json.loads(config_file.read_text())
            return ModelShape(
                _count_parameters(config), text.vocab_size, text.hidden_size, text.num_hidden_layers,
                getattr(text, "intermediate_size", 4 * text.hidden_size), f"{config_file} ({raw.get('model_type')})",
            )
        return KNOWN_MODELS.get(Path(model_path.rstrip("/")).name)
    return None


@dataclass(frozen=True)
class Phase:
    name: str
    parts: dict[str, float]  # bytes per GPU

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def estimate_phases(cfg, shape: ModelShape) -> list[Phase]:
    """The per-GPU buffers of one actor GPU in each phase of a step (see the module docstring)."""
    o, m = cfg.openrlhf, cfg.model
    n = o.num_nodes * o.num_gpus_per_node
    b = _DTYPE_BYTES[m.dtype]
    P, V, H = shape.params, shape.vocab_size, shape.hidden_size
    L = cfg.rollout.max_prompt_len + cfg.rollout.max_new_tokens
    stage = o.zero_stage
    params = P * b / (n if stage >= 3 else 1)
    grads = P * 4 / (n if stage >= 2 else 1)
    optimizer = 0.0 if o.adam_offload else P * 12 / (n if stage >= 1 else 1)
    reference = 0.0 if (cfg.algorithm.kl_beta == 0 or o.ref_offload) else P * b / (n if stage >= 3 else 1)
    gathered = 2 * shape.largest_tensor * b if stage >= 3 else 0.0
    contexts = CUDA_CONTEXT_BYTES * (2 + (1 if o.colocate_all else 0))
    bt, br = cfg.train.micro_batch_size, o.rollout_micro_batch_size
    rollout_logits = br * L * V * (b + 4)
    train_logits = bt * L * V * (b + 4 + 4)
    per_layer = bt * L * (8 * H + 3 * shape.intermediate_size) * b
    if m.gradient_checkpointing:
        activations = bt * L * H * b * shape.num_layers + per_layer
    else:
        activations = per_layer * shape.num_layers
    colocated_vllm = o.vllm_gpu_memory_utilization * o.gpu_memory_gb * GB if o.colocate_all else 0.0
    vllm_idle = 0.0 if o.vllm_enable_sleep else colocated_vllm
    states_outside_training = {} if o.ds_enable_sleep else {"actor gradients": grads, "actor optimizer": optimizer}

    base = {"actor parameters": params, **states_outside_training, "reference parameters": reference,
            "CUDA contexts": contexts}
    phases = []
    if o.colocate_all:
        phases.append(Phase("generation", {**base, "vLLM (colocated, awake)": colocated_vllm}))
    phases.append(Phase("old/reference log-probs", {
        **base, "ZeRO-3 gathered parameters": gathered, "rollout micro-batch logits": rollout_logits,
        **({"vLLM (colocated, asleep)" if o.vllm_enable_sleep else "vLLM (colocated)": vllm_idle}
           if o.colocate_all else {}),
    }))
    phases.append(Phase("training", {
        "actor parameters": params, "actor gradients": grads, "actor optimizer": optimizer,
        "reference parameters": reference, "CUDA contexts": contexts, "ZeRO-3 gathered parameters": gathered,
        "train micro-batch activations": activations, "train micro-batch logits": train_logits,
        **({"vLLM (colocated, asleep)" if o.vllm_enable_sleep else "vLLM (colocated)": vllm_idle}
           if o.colocate_all else {}),
    }))
    return phases


def format_estimate(cfg) -> tuple[str, bool]:
    """The dry run's memory section and whether the peak exceeds ``openrlhf.gpu_memory_gb``."""
    shape = model_shape(cfg.model.path)
    limit = cfg.openrlhf.gpu_memory_gb
    if shape is None:
        return (f"# GPU memory: no estimate (model.path = {cfg.model.path!r} is not on this machine and not one of "
                f"the paper's models)"), False
    phases = estimate_phases(cfg, shape)
    peak = max(phases, key=lambda p: p.total)
    lines = [f"# GPU memory per actor GPU, estimated ({shape.params / 1e9:.2f}B parameters, vocabulary "
             f"{shape.vocab_size}, {shape.source}); openrlhf.gpu_memory_gb = {limit:g}"]
    for phase in phases:
        parts = ", ".join(f"{name} {value / GB:.1f}" for name, value in phase.parts.items() if value > 0)
        lines.append(f"#   {phase.name:<24} {phase.total / GB:6.1f} GB  ({parts})")
    over = peak.total > limit * GB
    if over:
        lines.append(
            f"# WARNING: the {peak.name} peak ({peak.total / GB:.1f} GB) exceeds openrlhf.gpu_memory_gb = {limit:g}: "
            "lower train.micro_batch_size / openrlhf.rollout_micro_batch_size (logits grow with micro-batch x length "
            "x vocabulary), enable model.gradient_checkpointing, or use more GPUs"
        )
    return "\n".join(lines), over
