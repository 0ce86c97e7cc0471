"""The price of the APMPO extension: the same CPU loop with it and with OpenRLHF's stock GRPO.

Both runs execute OpenRLHF 0.11.2's own ``openrlhf.cli.train_ppo_ray`` on the same flags
(configs/local/openrlhf_cpu.yaml, the same sizes: 16 prompts x 32 samples, 4 optimizer steps per
step, one vLLM engine, one ZeRO-3 actor, the reference model) and the CPU backend's device shims:

* **extension**: ``python -m apmpo_openrlhf.train`` with ``algorithm.loss: apmpo`` (our trainer,
  samples generator, experience maker, actor loss, metrics files; the weight-sync check off);
* **stock**: the same flags with ``algorithm.loss: grpo`` (``--actor.eps_clip_low_high 0.2 0.2``,
  ``--algo.advantage.estimator group_norm``, seq-mean-token-mean), run by this script through OpenRLHF's
  CLI with nothing of ours patched in: OpenRLHF's ``PPOTrainer``, ``SamplesGenerator``,
  ``RemoteExperienceMaker``, ``PolicyLoss`` and KL; only cpu_backend.py's device substitutions and the
  task's reward function file.

Both use ``--data.max_samples 16`` (one rollout batch per episode, so the stock loop, which has no
max_steps, runs exactly ``--steps`` full steps) and no evaluation or checkpoint before the end.
Runs alternate (extension, stock, stock, extension, ...: ``--pairs``) so that a change of machine
load hits both. Per step: OpenRLHF's own ``timing/*`` (generation, experience making, training,
weight broadcast) and the wall time between consecutive steps' TensorBoard events (everything the
loop does per step: logging, our metrics files and checks included). Prints the medians over steps
(the first ``--warmup`` steps of each run left out) and the ratios extension / stock.

    python benchmarks/extension_price.py                 # 40 steps, 1 pair (~6 min on 2 cores)
    python benchmarks/extension_price.py --steps 60 --pairs 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CONFIG = REPO_ROOT / "configs" / "local" / "openrlhf_cpu.yaml"
STAGES = ["generation", "make_experience", "ppo_train", "broadcast"]


def overrides(steps: int, out: Path, loss: str) -> list[str]:
    return [f"max_steps={steps}", f"output_dir={out}", f"algorithm.loss={loss}", "openrlhf.check_weight_sync=false",
            "eval.at_step0=false", "checkpoint.save_steps=100000", "checkpoint.resume=false",
            'openrlhf.extra_args=["--data.max_samples", "16"]', "local.progress_bar=false"]


# ----------------------------------------------------------------------------- the stock run (child)
def stock_child(steps: int, out: Path) -> int:
    """OpenRLHF's CLI on the flags of the config with algorithm.loss=grpo, device shims only."""
    from apmpo_openrlhf.config import load_config
    from apmpo_openrlhf.openrlhf_adapter import cpu_backend
    from apmpo_openrlhf.openrlhf_adapter.arguments import openrlhf_argv
    from apmpo_openrlhf.openrlhf_adapter.launcher import prepare_output_dirs, ray_init_kwargs, run_openrlhf_cli
    from apmpo_openrlhf.openrlhf_adapter.synthetic_inputs import with_synthetic_inputs

    cfg = with_synthetic_inputs(load_config(CONFIG, overrides(steps, out, "grpo")), create=True)
    argv = openrlhf_argv(cfg)

    def stock_train(args, real_train):
        import ray

        if cpu_backend.active():
            cpu_backend.configure_args(args, cfg)
            cpu_backend.install_driver_shims(args)
        prepare_output_dirs(cfg, args)
        ray.init(**ray_init_kwargs(cfg, args))
        try:
            real_train(args)  # OpenRLHF's train(): its own PPOTrainer, actor, loss
        finally:
            ray.shutdown()

    run_openrlhf_cli(argv, stock_train)
    return 0


# ----------------------------------------------------------------------------- parent
def run(kind: str, steps: int, out: Path, log: Path) -> None:
    if kind == "extension":
        cmd = [sys.executable, "-m", "apmpo_openrlhf.train", "--config", str(CONFIG)]
        for o in overrides(steps, out, "apmpo"):
            cmd += ["--set", o]
    else:
        cmd = [sys.executable, __file__, "--stock-child", "--steps", str(steps), "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with log.open("w") as f:
        code = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"{kind} run failed ({code}); see {log}")


def step_times(out: Path) -> dict[str, list[float]]:
    """Per step: timing/<stage> of OpenRLHF's status and the wall time since the previous step's events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((out / "tensorboard").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(files[-1]), size_guidance={"scalars": 0})
    acc.Reload()
    times = {stage: [e.value for e in acc.Scalars(f"train/timing/{stage}")] for stage in STAGES}
    times["step_total"] = [e.value for e in acc.Scalars("train/timing/step_total")]
    wall = [e.wall_time for e in acc.Scalars("train/timing/generation")]
    times["wall"] = [b - a for a, b in zip(wall, wall[1:])]
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="steps per run (default 40)")
    ap.add_argument("--pairs", type=int, default=1, help="(extension, stock) pairs, alternating order (default 1)")
    ap.add_argument("--warmup", type=int, default=5, help="first steps of each run not counted (default 5)")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--stock-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stock_child:
        return stock_child(args.steps, args.out)

    root = args.out or Path(tempfile.mkdtemp(prefix="extension_price_"))
    root.mkdir(parents=True, exist_ok=True)
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in ("extension", "stock")}
    order = []
    for i in range(args.pairs):
        order += ["extension", "stock"] if i % 2 == 0 else ["stock", "extension"]
    for i, kind in enumerate(order):
        out = root / f"{i}_{kind}"
        print(f"run {i + 1}/{len(order)}: {kind} ({args.steps} steps) -> {out}", file=sys.stderr, flush=True)
        run(kind, args.steps, out, root / f"{i}_{kind}.log")
        for key, values in step_times(out).items():
            skip = args.warmup - 1 if key == "wall" else args.warmup
            samples[kind].setdefault(key, []).extend(values[max(skip, 0):])

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from openrlhf_seeds import cpu_name

    print(f"OpenRLHF CPU loop (configs/local/openrlhf_cpu.yaml sizes), {args.steps} steps per run, {args.pairs} "
          f"pair(s), first {args.warmup} steps of each run left out; {cpu_name()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print("| per step (median, s) | extension (APMPO) | stock OpenRLHF (GRPO) | ratio |")
    print("| --- | --- | --- | --- |")
    names = {"generation": "generation (rewards inside)", "make_experience": "experience making",
             "ppo_train": "training", "broadcast": "weight broadcast", "step_total": "sum of the stages",
             "wall": "wall time per step"}
    ratios = {}
    for key, name in names.items():
        ext, stock = statistics.median(samples["extension"][key]), statistics.median(samples["stock"][key])
        ratios[key] = ext / stock
        print(f"| {name} | {ext:.3f} | {stock:.3f} | {ratios[key]:.3f} |")
    goal = 1.05
    print(f"total step time ratio (wall) {ratios['wall']:.3f}: {'meets' if ratios['wall'] <= goal else 'ABOVE'} "
          f"the goal <= {goal}")
    print(f"runs kept in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
