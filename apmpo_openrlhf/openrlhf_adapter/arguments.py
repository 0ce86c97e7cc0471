"""TrainConfig -> OpenRLHF's own command-line flags (``openrlhf.cli.train_ppo_ray``), in one place.

OpenRLHF's parser knows nothing of the APMPO algorithm options (loss name, adaptive p / eps,
advantage std); those travel separately as :class:`AlgorithmSpec`, attached to OpenRLHF's
parsed ``args`` after its own validation (see ``launcher.py``), so OpenRLHF's parser and checks
see exactly the flags it defines and nothing else.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import ValidationError

from .. import wandb_setup
from ..algorithms import get_policy_loss
from ..config import ConfigError, TrainConfig
from ..config.schema import RolloutCorrectionSection
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
    loss_kwargs: dict  # the registry entry's parameters(cfg)
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
    # algorithm.rollout_correction with openrlhf.extra_args' --algo.advantage.is_correction_* folded in
    rollout_correction: dict = field(default_factory=lambda: RolloutCorrectionSection().model_dump())
    output_dir: str = ""  # absolute; the trainer actor writes metrics.jsonl / eval.jsonl there
    min_new_tokens: int = 1  # rollout.min_new_tokens: vLLM's min_tokens (OpenRLHF has no flag for it)

    def as_dict(self) -> dict:
        return asdict(self)


def algorithm_spec(cfg: TrainConfig) -> AlgorithmSpec:
    alg = cfg.algorithm
    return AlgorithmSpec(
        loss=alg.loss,
        loss_kwargs=get_policy_loss(alg.loss).parameters(cfg),
        advantage_std=alg.advantage_std,
        advantage_delta=alg.advantage_delta,
        adaptive=alg.adaptive.model_dump(),
        group_size=cfg.rollout.n_samples_per_prompt,
        max_steps=cfg.max_steps,
        eval_at_step0=cfg.eval.at_step0,
        optimizer_steps_per_rollout=cfg.optimizer_steps_per_rollout,
        adaptive_statistics=alg.adaptive_statistics,
        check_weight_sync=cfg.openrlhf.check_weight_sync,
        rollout_correction=rollout_correction(cfg)[0].model_dump(),
        output_dir=str(Path(cfg.output_dir).resolve()),
        min_new_tokens=cfg.rollout.min_new_tokens,
    )


# OpenRLHF's own flags for the rollout correction, and the key of algorithm.rollout_correction each sets.
CORRECTION_FLAGS = {
    "--algo.advantage.is_correction_level": "level",
    "--algo.advantage.is_correction_mode": "mode",
    "--algo.advantage.is_correction_gating": "gating",
    "--algo.advantage.is_correction_threshold": "threshold",
}


def rollout_correction(cfg: TrainConfig) -> tuple[RolloutCorrectionSection, list[str]]:
    """``algorithm.rollout_correction`` with OpenRLHF's ``--algo.advantage.is_correction_*`` flags from
    ``openrlhf.extra_args`` folded in (a flag wins over the key, as the later flag wins in OpenRLHF's
    parser), validated by the schema; and ``extra_args`` without those flags.

    The extension's losses apply the correction themselves (actor.py), so the flags are read here
    and the command line gets the ones :func:`openrlhf_argv` derives from the result."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in CORRECTION_FLAGS:
        parser.add_argument(flag, nargs="+" if flag.endswith("threshold") else None, type=str)
    try:
        given, rest = parser.parse_known_args(list(cfg.openrlhf.extra_args))
    except SystemExit:  # argparse reports a flag without its value this way
        raise ConfigError(f"openrlhf.extra_args: an {', '.join(CORRECTION_FLAGS)} flag has no value") from None
    settings = cfg.algorithm.rollout_correction.model_dump()
    flags = {}
    for flag, key in CORRECTION_FLAGS.items():
        value = getattr(given, flag.removeprefix("--").replace("-", "_"), None)
        if value is not None:
            flags[key] = flag
            settings[key] = [float(v) for v in value] if key == "threshold" else value
    try:
        section = RolloutCorrectionSection.model_validate(settings)
    except ValidationError as err:
        named = ", ".join(f"{f} (= algorithm.rollout_correction.{k})" for k, f in flags.items())
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rollout_correction'}: "
                            f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())
        raise ConfigError(f"openrlhf.extra_args {named}: {reasons}") from None
    return section, rest


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


# OpenRLHF flags that openrlhf_argv sets from config keys: in openrlhf.extra_args they would override
# the key silently (argparse keeps the last value), so they are refused, naming the key.
CONFIG_FLAGS: dict[str, str] = {
    "--actor.num_nodes": "openrlhf.num_nodes",
    "--actor.num_gpus_per_node": "openrlhf.num_gpus_per_node",
    "--ref.num_nodes": "openrlhf.ref_num_nodes",
    "--ref.num_gpus_per_node": "openrlhf.ref_num_gpus_per_node",
    "--ref.offload": "openrlhf.ref_offload",
    "--train.colocate_all": "openrlhf.colocate_all",
    "--train.colocate_actor_ref": "openrlhf.colocate_actor_ref",
    "--vllm.num_engines": "openrlhf.vllm_num_engines",
    "--vllm.tensor_parallel_size": "openrlhf.vllm_tensor_parallel_size",
    "--vllm.gpu_memory_utilization": "openrlhf.vllm_gpu_memory_utilization",
    "--vllm.sync_backend": "openrlhf.vllm_sync_backend",
    "--vllm.enable_sleep": "openrlhf.vllm_enable_sleep",
    "--vllm.enforce_eager": "openrlhf.vllm_enforce_eager",
    "--vllm.enable_prefix_caching": "openrlhf.vllm_enable_prefix_caching",
    "--ds.zero_stage": "openrlhf.zero_stage",
    "--ds.param_dtype": "model.dtype",
    "--ds.attn_implementation": "model.attn_implementation",
    "--ds.enable_sleep": "openrlhf.ds_enable_sleep",
    "--ds.adam_offload": "openrlhf.adam_offload",
    "--ds.packing_samples": "openrlhf.packing_samples",
    "--actor.gradient_checkpointing_enable": "model.gradient_checkpointing",
    "--actor.model_name_or_path": "model.path",
    "--data.prompt_dataset": "data.train_path",
    "--data.input_key": "data.input_key",
    "--data.label_key": "data.label_key",
    "--data.apply_chat_template": "data.apply_chat_template",
    "--data.image_key": "data.image_key",
    "--data.max_images_per_prompt": "openrlhf.max_images_per_prompt",
    "--actor.freeze_visual_encoder": "openrlhf.freeze_visual_encoder",
    "--data.max_len": "rollout.max_prompt_len + rollout.max_new_tokens",
    "--rollout.batch_size": "rollout.prompts_per_step",
    "--rollout.n_samples_per_prompt": "rollout.n_samples_per_prompt",
    "--rollout.temperature": "rollout.temperature",
    "--rollout.top_p": "rollout.top_p",
    "--rollout.max_new_tokens": "rollout.max_new_tokens",
    "--rollout.micro_batch_size": "openrlhf.rollout_micro_batch_size",
    "--train.seed": "seed",
    "--train.batch_size": "train.train_batch_size",
    "--train.micro_batch_size": "train.micro_batch_size",
    "--train.max_epochs": "train.train_batch_size (optimizer steps per rollout = rollout samples / "
    "train.train_batch_size; one pass over each rollout batch)",
    "--train.num_episodes": "max_steps",
    "--actor.adam.lr": "train.lr",
    "--actor.adam.betas": "train.adam_betas",
    "--actor.adam.weight_decay": "train.weight_decay",
    "--actor.max_norm": "train.grad_clip",
    "--actor.lr_scheduler": "train.lr_schedule",
    "--actor.min_lr_ratio": "train.min_lr_ratio",
    "--actor.lr_warmup_ratio": "train.warmup_steps",
    "--algo.kl.use_loss": "algorithm.kl_beta (the KL term is always a loss)",
    "--algo.kl.init_coef": "algorithm.kl_beta",
    "--algo.kl.estimator": "algorithm.kl_estimator",
    "--actor.loss_agg_mode": "algorithm.loss (its registry entry fixes the aggregation)",
    "--actor.entropy_coef": "none: the entropy is logged, never optimised (not part of these objectives)",
    "--algo.dynamic_filtering_enable": "algorithm.dynamic_filtering",
    "--algo.dynamic_filtering_range": "algorithm.dynamic_filtering (keeps groups with mixed rewards: range 0 1)",
    "--reward.overlong_buffer_len": "algorithm.overlong_buffer_len",
    "--reward.overlong_penalty_factor": "algorithm.overlong_penalty_factor",
    "--reward.remote_url": "openrlhf.remote_reward_url",
    "--eval.dataset": "data.eval_path",
    "--eval.temperature": "eval.temperature",
    "--eval.n_samples_per_prompt": "eval.n_samples_per_prompt",
    "--eval.steps": "eval.every_steps",
    "--ckpt.path": "openrlhf.ckpt_path",
    "--ckpt.output_dir": "openrlhf.final_model_dir",
    "--ckpt.save_steps": "checkpoint.save_steps",
    "--ckpt.max_num": "checkpoint.max_keep",
    "--ckpt.load_enable": "checkpoint.resume",
    "--ckpt.save_hf": "checkpoint.save_hf",
    "--logger.logging_steps": "logging.log_every",
    "--logger.tensorboard_dir": "logging.tensorboard / openrlhf.tensorboard_dir",
    "--logger.wandb.key": "logging.wandb (the key comes from WANDB_API_KEY or `wandb login`, never a config)",
    "--logger.wandb.project": "logging.wandb.project",
    "--logger.wandb.org": "logging.wandb.entity",
    "--logger.wandb.run_name": "logging.wandb.run_name",
}

# OpenRLHF flags whose mechanism the APMPO extension replaces or never runs: accepted by OpenRLHF's
# parser, they would have no effect (or a different one than OpenRLHF documents).
REPLACED_FLAGS: dict[str, str] = {
    "--actor.policy_loss_type": "the policy loss is algorithm.loss, a loss of the registry (sequence-level "
    "importance ratios: algorithm.loss=gspo)",
    "--actor.dual_clip": "the registry's losses apply no dual clip; the clip bounds are algorithm.eps_low / "
    "algorithm.eps_high (apmpo: algorithm.adaptive)",
    "--actor.eps_clip": "use algorithm.eps_low / algorithm.eps_high (apmpo: algorithm.adaptive)",
    "--actor.eps_clip_low_high": "use algorithm.eps_low / algorithm.eps_high (apmpo: algorithm.adaptive)",
    "--algo.advantage.estimator": "advantages are SPEC.md 2's group advantages, set by algorithm.advantage_std / "
    "algorithm.advantage_delta and the loss's registry entry",
    "--algo.advantage.no_std_norm": "no std normalisation is algorithm.loss=drgrpo (Dr. GRPO); other losses use "
    "algorithm.advantage_std",
    "--algo.advantage.gamma": "a GAE/return parameter: outcome rewards have no per-token returns here",
    "--algo.advantage.lambd": "a GAE parameter: there is no critic",
    "--reward.clip_range": "the experience maker does not clip rewards (verifiable rewards lie in [0, 1]); "
    "shape them in the reward function",
    "--reward.normalize_enable": "reward-model normalisation: rewards come from the verifiable reward function",
    "--algo.kl.target": "adaptive KL control: the KL term is a loss with the fixed coefficient algorithm.kl_beta",
    "--algo.kl.horizon": "adaptive KL control: the KL term is a loss with the fixed coefficient algorithm.kl_beta",
    "--algo.kl.unbiased_gradient": "the KL loss is the core's kl_penalty, with the exact gradient of "
    "algorithm.kl_estimator on both backends",
    "--train.async_enable": "the APMPO extension runs OpenRLHF's synchronous trainer (p and eps_high come from "
    "the batch the policy just sampled)",
    "--train.async_queue_size": "asynchronous training is not supported (see --train.async_enable)",
    "--train.partial_rollout_enable": "asynchronous training is not supported (see --train.async_enable)",
    "--train.agent_func_path": "an agent function replaces the verifiable reward function (reward.task / "
    "openrlhf.remote_reward_url)",
    "--reward.model_name_or_path": "rewards come from the verifiable reward function (reward.task / "
    "openrlhf.remote_reward_url), never a reward model",
    "--reward.num_nodes": "there is no reward model",
    "--reward.num_gpus_per_node": "there is no reward model",
    "--reward.offload": "there is no reward model",
    "--train.colocate_critic_reward": "there is no critic or reward model",
    "--critic.model_name_or_path": "there is no critic: advantages are group advantages",
}
# Every --critic.* flag configures the critic, which group advantages never build.
_CRITIC_PREFIX = "--critic."
REPLACED_FLAGS["--ds.value_head_prefix"] = "the value head of a critic or reward model: there is neither"

# The rest of OpenRLHF 0.11.2's parser: honoured as OpenRLHF documents them when given in
# openrlhf.extra_args (tests/openrlhf/test_driver_checks.py checks that every flag of OpenRLHF's
# parser is in exactly one of the three tables, so an OpenRLHF upgrade forces a decision).
PASSED_FLAGS: frozenset[str] = frozenset({
    "--actor.adam.eps", "--actor.aux_loss_coef", "--actor.gradient_checkpointing_reentrant",
    "--actor.optim", "--actor.muon.lr", "--actor.muon.momentum", "--actor.muon.nesterov",
    "--actor.muon.no_nesterov", "--actor.muon.ns_steps",
    # folded into algorithm.rollout_correction (rollout_correction() below), validated with it
    "--algo.advantage.is_correction_level", "--algo.advantage.is_correction_mode",
    "--algo.advantage.is_correction_gating", "--algo.advantage.is_correction_threshold",
    "--ckpt.best_metric_key", "--ckpt.disable_ds", "--ckpt.max_mem",
    "--data.dataloader_num_workers", "--data.disable_fast_tokenizer", "--data.input_template",
    "--data.max_samples", "--data.prompt_probs", "--data.prompt_split", "--eval.split",
    "--ds.deepcompile", "--ds.experts_implementation", "--ds.grad_accum_dtype", "--ds.load_in_4bit",
    "--ds.lora.alpha", "--ds.lora.dropout", "--ds.lora.rank", "--ds.lora.target_modules",
    "--ds.overlap_comm", "--ds.ring_attn_head_stride", "--ds.ring_attn_size", "--ds.tensor_parallel_size",
    "--ds.use_liger_kernel", "--ds.use_universal_ckpt", "--ds.zpg",
    "--local_rank", "--logger.wandb.group", "--reward.stop_properly_penalty_coef",
    "--rollout.max_tokens_per_gpu", "--train.max_tokens_per_gpu", "--train.dynamic_batch_enable",
    "--rollout.vllm_generate_batch_size",
    "--train.ema_beta", "--train.enable_ema", "--train.full_determinism_enable", "--use_ms",
    "--vllm.sync_with_ray",
})


def refused_extra_flag(flag: str) -> str | None:
    """Why ``flag`` may not appear in ``openrlhf.extra_args`` (None: it is passed to OpenRLHF)."""
    name = flag.split("=", 1)[0]
    if name in CONFIG_FLAGS:
        return f"set from the config: use {CONFIG_FLAGS[name]}"
    if name in REPLACED_FLAGS:
        return f"replaced by the APMPO extension: {REPLACED_FLAGS[name]}"
    if name.startswith(_CRITIC_PREFIX):
        return "there is no critic: advantages are group advantages"
    return None


def check_extra_args(extra_args: list[str]) -> None:
    """Refuse every flag of ``openrlhf.extra_args`` that would be ignored or silently override a key."""
    problems = [f"{flag}: {why}" for flag in extra_args if flag.startswith("--")
                for why in [refused_extra_flag(flag)] if why]
    if problems:
        raise ConfigError(
            "openrlhf.extra_args has OpenRLHF flags that the APMPO extension does not pass on:\n  "
            + "\n  ".join(problems)
        )


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
    check_extra_args(o.extra_args)
    on_cpu = o.device == "cpu" or (o.device == "auto" and cpu_backend.active())
    if m.dtype not in _PARAM_DTYPES and not on_cpu:
        raise ConfigError(
            f"model.dtype = {m.dtype!r}: OpenRLHF trains in bfloat16 or float16 on GPUs; allowed: "
            + ", ".join(_PARAM_DTYPES) + " (float32 only on a machine without GPU, with the CPU backend)"
        )
    if o.vllm_dtype is not None and not cpu_backend.active() and (o.vllm_dtype, m.dtype) != ("bfloat16", "bfloat16"):
        raise ConfigError(
            f"openrlhf.vllm_dtype = {o.vllm_dtype!r} with model.dtype = {m.dtype!r}: on GPUs OpenRLHF 0.11.2 starts every "
            "vLLM engine in bfloat16 (trainer/ray/vllm_engine.py) and its weight sync needs the actor's dtype; leave "
            "it null (or bfloat16 with model.dtype bfloat16). The CPU backend honours other engine dtypes"
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
    entry = get_policy_loss(alg.loss)
    params = entry.parameters(cfg)
    if params.get("eps_low") is not None and params.get("eps_high") is not None:
        _flag(argv, "actor.eps_clip_low_high", params["eps_low"], params["eps_high"])
    _flag(argv, "actor.loss_agg_mode", "seq-mean-token-mean" if entry.aggregation == "sequence" else "token-mean")
    # Rollout correction: OpenRLHF asks vLLM for the sampled tokens' log-probs (and keeps them in
    # Experience.rollout_log_probs) only when is_correction_level is not off, so measuring the mismatch
    # needs a level even when nothing is corrected; the loss applies algorithm.rollout_correction
    # (args.apmpo), never OpenRLHF's PolicyLoss.
    correction, extra_args = rollout_correction(cfg)
    if correction.level != "off":
        _flag(argv, "algo.advantage.is_correction_level", correction.level)
        _flag(argv, "algo.advantage.is_correction_mode", correction.mode)
        _flag(argv, "algo.advantage.is_correction_gating", correction.gating)
        _flag(argv, "algo.advantage.is_correction_threshold", *correction.threshold)
    elif correction.measure:
        _flag(argv, "algo.advantage.is_correction_level", "token")
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
    if wandb_setup.effective_mode(cfg) not in (None, "disabled"):
        # OpenRLHF enables W&B when a key is given; the real key comes from WANDB_API_KEY or
        # `wandb login` on the nodes (never from the config, so it never shows in logs).
        _flag(argv, "logger.wandb.key", "from-environment")
        _flag(argv, "logger.wandb.project", wandb.project)
        if wandb.entity:
            _flag(argv, "logger.wandb.org", wandb.entity)
    argv.extend(extra_args)
    return argv


def shell_command(argv: list[str]) -> str:
    """The argv as one copy-pasteable shell command."""
    return shlex.join(["python", "-m", "openrlhf.cli.train_ppo_ray", *argv])
