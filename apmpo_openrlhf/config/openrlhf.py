"""Options of the OpenRLHF (Ray cluster) backend: the ``openrlhf:`` section.

Only cluster layout and OpenRLHF-specific switches live here; everything the two backends share
(model, algorithm, batch sizes, learning rate, checkpoints, logging) comes from the common
sections of :class:`~apmpo_openrlhf.config.schema.TrainConfig`. The mapping to OpenRLHF's
command-line flags is ``apmpo_openrlhf.openrlhf_adapter.arguments``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OpenRLHFSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ── Device and memory ──
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto",
        description="where the job runs: auto = decided from the Ray cluster that runs it (a job submitted to an "
        "existing cluster probes a GPU slot there; otherwise this machine), cuda = GPU nodes (the driver itself may "
        "have no GPU), cpu = the CPU backend (openrlhf_adapter/cpu_backend.py, machines without CUDA)",
    )
    gpu_memory_gb: float = Field(
        40.0, gt=0, description="memory of one GPU in GB: --dry-run warns when its per-GPU peak estimate exceeds it "
        "(40 = the paper's A100 40GB)"
    )

    # ── Placement ──
    num_nodes: int = Field(1, ge=1, description="nodes for the actor (DeepSpeed) ranks")
    num_gpus_per_node: int = Field(4, ge=1, description="actor GPUs per node")
    ref_num_nodes: int | None = Field(None, ge=1, description="reference-model nodes (null = same as the actor)")
    ref_num_gpus_per_node: int | None = Field(None, ge=1, description="reference-model GPUs per node (null = actor's)")
    ref_offload: bool = Field(False, description="keep the reference model's weights on the CPU")
    colocate_all: bool = Field(True, description="actor, reference and vLLM engines share the same GPUs")
    colocate_actor_ref: bool = Field(
        False, description="without colocate_all: actor and reference share GPUs (vLLM gets its own)"
    )

    # ── vLLM rollout engines ──
    vllm_num_engines: int = Field(4, ge=1, description="vLLM engines (with colocate_all: engines x tp = actor GPUs)")
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM engine")
    vllm_gpu_memory_utilization: float = Field(
        0.5, gt=0, le=1, description="fraction of GPU memory vLLM may take (keep room for ZeRO-3 when colocated)"
    )
    vllm_enable_sleep: bool = Field(True, description="vLLM sleep mode: free its memory while the actor trains")
    vllm_sync_backend: Literal["nccl", "gloo"] = Field("nccl", description="actor -> vLLM weight sync backend")
    vllm_enforce_eager: bool = Field(False, description="disable CUDA graphs in vLLM (less memory, slower)")
    vllm_enable_prefix_caching: bool = Field(False, description="vLLM prefix caching")
    vllm_dtype: Literal["float32", "bfloat16"] | None = Field(
        None,
        description="dtype of the vLLM engines (null: OpenRLHF's choice, the actor's dtype on the CPU backend). The CPU "
        "backend honours it (the actor's weights are cast when the engine receives them: a float32 actor with a "
        "bfloat16 engine is the GPU set-up's mismatch, see algorithm.rollout_correction); on GPUs OpenRLHF 0.11.2 "
        "always starts its engines in bfloat16, so only null or bfloat16 (with model.dtype bfloat16) is accepted",
    )
    check_weight_sync: bool = Field(
        False,
        description="after every weight sync, compare each vLLM engine's log-probs of a fixed sequence with the "
        "actor's (weight_sync/* metrics; one engine call and one actor forward per step; rollout temperature 1 only)",
    )

    # ── DeepSpeed ──
    zero_stage: int = Field(3, ge=0, le=3, description="DeepSpeed ZeRO stage")
    ds_enable_sleep: bool = Field(True, description="offload DeepSpeed states while vLLM generates (colocate_all)")
    adam_offload: bool = Field(False, description="keep Adam states on the CPU (DeepSpeed CPU Adam)")
    rollout_micro_batch_size: int = Field(
        8, ge=1, description="samples per forward pass when computing old/reference log-probs"
    )
    packing_samples: bool = Field(False, description="pack sequences (needs flash attention)")

    # ── Outputs (default: under output_dir) ──
    ckpt_path: str | None = Field(None, description="DeepSpeed checkpoints (null = <output_dir>/checkpoints)")
    final_model_dir: str | None = Field(
        None, description="final Hugging Face model read by the evaluation harness (null = <output_dir>/final_model)"
    )
    tensorboard_dir: str | None = Field(None, description="TensorBoard logs (null = <output_dir>/tensorboard)")

    # ── Rewards and VLM ──
    remote_reward_url: str | None = Field(
        None,
        description="reward_func file (or HTTP endpoint) loaded in each vLLM engine "
        "(null = apmpo_openrlhf/rewards/openrlhf_reward.py)",
    )
    max_images_per_prompt: int = Field(
        0, ge=0, description="images per prompt for vision-language models (0 = text-only)"
    )
    freeze_visual_encoder: bool = Field(False, description="train only the language model of a VLM")

    # ── Escape hatch ──
    extra_args: list[str] = Field(
        default_factory=list,
        description="raw OpenRLHF flags appended last (validated by OpenRLHF's parser), e.g. ['--vllm.enforce_eager']",
    )

    @model_validator(mode="after")
    def _layout(self) -> "OpenRLHFSection":
        actor_gpus = self.num_nodes * self.num_gpus_per_node
        vllm_gpus = self.vllm_num_engines * self.vllm_tensor_parallel_size
        if self.colocate_all and vllm_gpus != actor_gpus:
            raise ValueError(
                f"with colocate_all, vllm_num_engines * vllm_tensor_parallel_size ({self.vllm_num_engines} x "
                f"{self.vllm_tensor_parallel_size} = {vllm_gpus}) must equal num_nodes * num_gpus_per_node "
                f"({self.num_nodes} x {self.num_gpus_per_node} = {actor_gpus})"
            )
        if self.colocate_all or self.colocate_actor_ref:
            for name in ("ref_num_nodes", "ref_num_gpus_per_node"):
                value = getattr(self, name)
                actor_value = getattr(self, name.removeprefix("ref_"))
                if value is not None and value != actor_value:
                    raise ValueError(
                        f"{name}={value} must equal {name.removeprefix('ref_')}={actor_value} when the "
                        "reference model is colocated with the actor (colocate_all or colocate_actor_ref)"
                    )
        for flag in self.extra_args:
            if not isinstance(flag, str) or not flag:
                raise ValueError(f"extra_args entries must be non-empty strings, got {flag!r}")
        return self
