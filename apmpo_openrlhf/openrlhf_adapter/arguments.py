"""TrainConfig -> OpenRLHF's own command-line flags (``openrlhf.cli.train_ppo_ray``), in one place.

OpenRLHF's parser knows nothing of the APMPO algorithm options (loss name, adaptive p / eps,
advantage std); those travel separately as :class:`AlgorithmSpec`, attached to OpenRLHF's
parsed ``args`` after its own validation (see ``launcher.py``), so OpenRLHF's parser and checks
see exactly the flags it defines and nothing else.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import ConfigError, TrainConfig
from . import cpu_backend

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent
# The reward function file that every vLLM engine loads (written by the rewards package).
DEFAULT_REWARD_FILE = PACKAGE_DIR / "rewards" / "openrlhf_reward.py"

_PARAM_DTYPES = {"bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the APMPO extension needs on the controller and on every actor rank.

    A plain, picklable record: it rides inside OpenRLHF's ``args`` (``args.apmpo``), which the
    DeepSpeed strategy object carries to every Ray actor.
    """

    loss: str
    loss_kwargs: dict
    advantage_std: str
    advantage_delta: float
    adaptive: dict
    group_size: int
    max_steps: int
    eval_at_step0: bool
    optimizer_steps_per_rollout: int
    check_weight_sync: bool = False
    extra: dict = field(default_factory=dict)
    adaptive_statistics: str = "sampled"  # "sampled" | "kept" (schema: algorithm.adaptive_statistics)
    output_dir: str = ""  # absolute; the trainer actor writes metrics.jsonl / eval.jsonl there

    def as_dict(self) -> dict:
        return asdict(self)


def algorithm_spec(cfg: TrainConfig) -> AlgorithmSpec:
    alg = cfg.algorithm
    return AlgorithmSpec(
        loss=alg.loss,
        loss_kwargs=alg.loss_kwargs(),
        advantage_std=alg.advantage_std,
        advantage_delta=alg.advantage_delta,
        adaptive=alg.adaptive.model_dump(),
        group_size=cfg.rollout.n_samples_per_prompt,
        max_steps=cfg.max_steps,
        eval_at_step0=cfg.eval.at_step0,
        optimizer_steps_per_rollout=cfg.optimizer_steps_per_rollout,
        adaptive_statistics=alg.adaptive_statistics,
        check_weight_sync=cfg.openrlhf.check_weight_sync,
        output_dir=str(Path(cfg.output_dir).resolve()),
    )


PATH_BASE_ENV = "APMPO_PATH_BASE"


def with_path_base(cfg: TrainConfig, base: str | None = None) -> TrainConfig:
    """Relative model/data/output paths resolved against ``base`` (default: $APMPO_PATH_BASE).

    ``ray job submit --working-dir .`` runs the job in a temporary copy of the repository (without
    data/, models/, outputs/): launch/submit.sh sets APMPO_PATH_BASE to the submitting checkout so
    that relative paths in configs keep meaning "relative to the repository" and outputs are not
    written into the temporary copy. Without a base the paths are left as they are.
    """
    base = base if base is not None else os.environ.get(PATH_BASE_ENV)
    if not base:
        return cfg

    def resolve(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute() or value.startswith(("http://", "https://")):
            return value
        return str(Path(base) / value)

    o = cfg.openrlhf
    return cfg.model_copy(
        update={
            "output_dir": resolve(cfg.output_dir),
            "model": cfg.model.model_copy(update={"path": resolve(cfg.model.path)}),
            "data": cfg.data.model_copy(
                update={"train_path": resolve(cfg.data.train_path), "eval_path": resolve(cfg.data.eval_path)}
            ),
            "openrlhf": o.model_copy(
                update={k: resolve(getattr(o, k)) for k in ("ckpt_path", "final_model_dir", "tensorboard_dir")}
            ),
        }
    )


def output_paths(cfg: TrainConfig) -> dict[str, str]:
    """Checkpoint, final-model and TensorBoard locations (defaults under ``output_dir``)."""
    o = cfg.openrlhf
    out = Path(cfg.output_dir)
    return {
        "ckpt_path": o.ckpt_path or str(out / "checkpoints"),
        "final_model_dir": o.final_model_dir or str(out / "final_model"),
        "tensorboard_dir": o.tensorboard_dir or str(out / "tensorboard"),
    }


def under_ray_job() -> bool:
    """True inside a driver started by ``ray job submit`` (Ray sets this variable for it)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def reward_url(cfg: TrainConfig, cwd: Path | None = None, relative: bool | None = None) -> str:
    """The reward function path as the Ray workers (vLLM engines) will see it.

    Under ``ray job submit --working-dir .`` every worker runs in its node's copy of the working
    directory, so a path relative to it is valid on every node, while an absolute path of the
    driver's copy is not: ``relative`` (default: :func:`under_ray_job`) gives the path relative to
    ``cwd``. Otherwise the absolute path. HTTP endpoints are kept as they are.
    """
    url = cfg.openrlhf.remote_reward_url
    if url is not None and url.startswith(("http://", "https://")):
        return url
    path = Path(url) if url is not None else DEFAULT_REWARD_FILE
    cwd = (cwd or Path.cwd()).resolve()
    resolved = (path if path.is_absolute() else cwd / path).resolve()
    if relative if relative is not None else under_ray_job():
        try:
            return str(resolved.relative_to(cwd))
        except ValueError:
            pass
    return str(resolved)


def _require(value, key: str, what: str):
    if value in (None, ""):
        raise ConfigError(f"{key} is required for backend openrlhf ({what}); set it in the config or with --set {key}=...")
    return value


def _flag(argv: list[str], name: str, *values) -> None:
    argv.append(f"--{name}")
    argv.extend(str(v) for v in values)


def openrlhf_argv(cfg: TrainConfig, cwd: Path | None = None, relative_reward_path: bool | None = None) -> list[str]:
    """The exact flags for ``python -m openrlhf.cli.train_ppo_ray`` (without the program name)."""
    if cfg.backend != "openrlhf":
        raise ConfigError(f"backend = {cfg.backend!r}: the OpenRLHF arguments exist only for backend 'openrlhf'")
    o, m, r, t, alg = cfg.openrlhf, cfg.model, cfg.rollout, cfg.train, cfg.algorithm
    if m.dtype not in _PARAM_DTYPES and not cpu_backend.active():
        raise ConfigError(
            f"model.dtype = {m.dtype!r}: OpenRLHF trains in bfloat16 or float16 on GPUs; allowed: "
            + ", ".join(_PARAM_DTYPES) + " (float32 only on a machine without GPU, with the CPU backend)"
        )
    if alg.kl_beta > 0 and alg.kl_estimator == "k1":
        # k1 as a loss has zero expected gradient; OpenRLHF only warns, the paper uses k3.
        raise ConfigError("algorithm.kl_estimator = 'k1': as a KL *loss* it has no useful gradient; allowed: k2, k3")
    model_path = _require(m.path, "model.path", "a Hugging Face model directory")
    train_path = _require(cfg.data.train_path, "data.train_path", "the prompt dataset")
    paths = output_paths(cfg)
    total_optimizer_steps = cfg.max_steps * cfg.optimizer_steps_per_rollout

    argv: list[str] = []
    # Placement
    _flag(argv, "actor.num_nodes", o.num_nodes)
    _flag(argv, "actor.num_gpus_per_node", o.num_gpus_per_node)
    _flag(argv, "ref.num_nodes", o.ref_num_nodes or o.num_nodes)
    _flag(argv, "ref.num_gpus_per_node", o.ref_num_gpus_per_node or o.num_gpus_per_node)
    if o.ref_offload:
        _flag(argv, "ref.offload")
    if o.colocate_all:
        _flag(argv, "train.colocate_all")
    elif o.colocate_actor_ref:
        _flag(argv, "train.colocate_actor_ref")
    # vLLM
    _flag(argv, "vllm.num_engines", o.vllm_num_engines)
    _flag(argv, "vllm.tensor_parallel_size", o.vllm_tensor_parallel_size)
    _flag(argv, "vllm.gpu_memory_utilization", o.vllm_gpu_memory_utilization)
    _flag(argv, "vllm.sync_backend", o.vllm_sync_backend)
    if o.vllm_enable_sleep:
        _flag(argv, "vllm.enable_sleep")
    if o.vllm_enforce_eager:
        _flag(argv, "vllm.enforce_eager")
    if o.vllm_enable_prefix_caching:
        _flag(argv, "vllm.enable_prefix_caching")
    # DeepSpeed
    _flag(argv, "ds.zero_stage", o.zero_stage)
    if m.dtype in _PARAM_DTYPES:
        _flag(argv, "ds.param_dtype", _PARAM_DTYPES[m.dtype])
    # float32 (CPU backend): OpenRLHF's parser knows bf16/fp16 only; cpu_backend.configure_args sets it
    _flag(argv, "ds.attn_implementation", m.attn_implementation)
    if o.ds_enable_sleep:
        _flag(argv, "ds.enable_sleep")
    if o.adam_offload:
        _flag(argv, "ds.adam_offload")
    if o.packing_samples:
        _flag(argv, "ds.packing_samples")
    if m.gradient_checkpointing:
        _flag(argv, "actor.gradient_checkpointing_enable")
    # Model and data
    _flag(argv, "actor.model_name_or_path", model_path)
    _flag(argv, "data.prompt_dataset", train_path)
    _flag(argv, "data.input_key", cfg.data.input_key)
    _flag(argv, "data.label_key", cfg.data.label_key)
    if cfg.data.apply_chat_template:
        _flag(argv, "data.apply_chat_template")
    if o.max_images_per_prompt > 0:
        _flag(argv, "data.image_key", _require(cfg.data.image_key, "data.image_key", "the image field of a VLM dataset"))
        _flag(argv, "data.max_images_per_prompt", o.max_images_per_prompt)
        if o.freeze_visual_encoder:
            _flag(argv, "actor.freeze_visual_encoder")
    _flag(argv, "data.max_len", r.max_prompt_len + r.max_new_tokens)
    # Rollout
    _flag(argv, "rollout.batch_size", r.prompts_per_step)
    _flag(argv, "rollout.n_samples_per_prompt", r.n_samples_per_prompt)
    _flag(argv, "rollout.temperature", r.temperature)
    _flag(argv, "rollout.top_p", r.top_p)
    _flag(argv, "rollout.max_new_tokens", r.max_new_tokens)
    _flag(argv, "rollout.micro_batch_size", o.rollout_micro_batch_size)
    # Training: the rollout batch is split into train.batch_size optimizer steps (SPEC.md 5)
    _flag(argv, "train.seed", cfg.seed)
    _flag(argv, "train.batch_size", t.train_batch_size)
    _flag(argv, "train.micro_batch_size", t.micro_batch_size)
    _flag(argv, "train.max_epochs", 1)
    # OpenRLHF stops when the prompts run out; max_steps stops earlier (trainer.py). One episode
    # yields at least one step, so max_steps episodes always suffice.
    _flag(argv, "train.num_episodes", cfg.max_steps)
    _flag(argv, "actor.adam.lr", t.lr)
    _flag(argv, "actor.adam.betas", *t.adam_betas)
    _flag(argv, "actor.adam.weight_decay", t.weight_decay)
    _flag(argv, "actor.max_norm", t.grad_clip)
    if t.lr_schedule == "cosine":
        _flag(argv, "actor.lr_scheduler", "cosine_with_min_lr")
        _flag(argv, "actor.min_lr_ratio", t.min_lr_ratio)
    else:
        _flag(argv, "actor.lr_scheduler", "constant_with_warmup")
    # OpenRLHF warms up for ceil(steps x ratio) optimizer steps; w / steps rounds up to w + 1 for many
    # (w, steps) (25 of 44: 25.000000000000004). Half a step less keeps ceil() at w, as the local backend.
    _flag(argv, "actor.lr_warmup_ratio", max(t.warmup_steps - 0.5, 0) / total_optimizer_steps)
    # Advantages: group_norm is OpenRLHF's GRPO estimator (drops the critic, checks n > 1); the
    # experience maker replaces its values by SPEC.md 2's (population std + delta).
    _flag(argv, "algo.advantage.estimator", "group_norm")
    # KL as a loss term (k3, beta), aggregated like the policy term (actor.py)
    if alg.kl_beta > 0:
        _flag(argv, "algo.kl.use_loss")
    _flag(argv, "algo.kl.init_coef", alg.kl_beta)
    _flag(argv, "algo.kl.estimator", alg.kl_estimator)
    # OpenRLHF's own PPO loss is replaced; keep its clip flags equal to the fixed bounds for the record.
    if alg.loss in ("grpo", "dapo"):
        _flag(argv, "actor.eps_clip_low_high", alg.eps_low, alg.effective_eps_high())
    _flag(argv, "actor.loss_agg_mode", "token-mean" if alg.loss == "dapo" else "seq-mean-token-mean")
    # entropy_coef 0 = compute and log the entropy without adding it to the loss
    _flag(argv, "actor.entropy_coef", 0)
    if alg.dynamic_filtering:
        _flag(argv, "algo.dynamic_filtering_enable")
        _flag(argv, "algo.dynamic_filtering_range", 0, 1)
    if alg.overlong_buffer_len is not None:
        if alg.overlong_buffer_len > r.max_new_tokens:
            raise ConfigError(
                f"algorithm.overlong_buffer_len = {alg.overlong_buffer_len} must be <= rollout.max_new_tokens "
                f"= {r.max_new_tokens}"
            )
        _flag(argv, "reward.overlong_buffer_len", alg.overlong_buffer_len)
        _flag(argv, "reward.overlong_penalty_factor", alg.overlong_penalty_factor)
    _flag(argv, "reward.remote_url", reward_url(cfg, cwd, relative_reward_path))
    # Evaluation during training (needs the reward function, which is always set)
    if cfg.data.eval_path:
        _flag(argv, "eval.dataset", cfg.data.eval_path)
        _flag(argv, "eval.temperature", cfg.eval.temperature)
        _flag(argv, "eval.n_samples_per_prompt", cfg.eval.n_samples_per_prompt)
        _flag(argv, "eval.steps", cfg.eval.every_steps if cfg.eval.every_steps else -1)
    elif cfg.eval.at_step0 or cfg.eval.every_steps:
        raise ConfigError("eval.at_step0 / eval.every_steps need data.eval_path (the evaluation prompts)")
    # Checkpoints, final model, resume
    _flag(argv, "ckpt.path", paths["ckpt_path"])
    _flag(argv, "ckpt.output_dir", paths["final_model_dir"])
    _flag(argv, "ckpt.save_steps", cfg.checkpoint.save_steps)
    _flag(argv, "ckpt.max_num", cfg.checkpoint.max_keep)
    if cfg.checkpoint.resume:
        _flag(argv, "ckpt.load_enable")
    if cfg.checkpoint.save_hf:
        _flag(argv, "ckpt.save_hf")
    # Logging
    _flag(argv, "logger.logging_steps", cfg.logging.log_every)
    if cfg.logging.tensorboard:
        _flag(argv, "logger.tensorboard_dir", paths["tensorboard_dir"])
    wandb = cfg.logging.wandb
    _flag(argv, "logger.wandb.run_name", (wandb.run_name if wandb and wandb.run_name else cfg.name))
    if wandb is not None and wandb.mode != "disabled":
        # OpenRLHF enables W&B when a key is given; the real key comes from WANDB_API_KEY or
        # `wandb login` on the nodes (never from the config, so it never shows in logs).
        _flag(argv, "logger.wandb.key", "from-environment")
        _flag(argv, "logger.wandb.project", wandb.project)
        if wandb.entity:
            _flag(argv, "logger.wandb.org", wandb.entity)
    argv.extend(o.extra_args)
    return argv


def shell_command(argv: list[str]) -> str:
    """The argv as one copy-pasteable shell command."""
    return shlex.join(["python", "-m", "openrlhf.cli.train_ppo_ray", *argv])
