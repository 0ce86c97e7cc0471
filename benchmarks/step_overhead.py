"""Wall-clock time of one training step, APMPO vs GRPO, on the same rollouts, in one process.

The rollouts (generation + rewards) are drawn once; then, interleaving the methods, each
repetition restores the same weights, optimizer and shuffle state and times the training part of
a step (old/reference log-probs, advantages, adaptive statistics, every optimizer step of the
rollout batch). Prints per-method medians and minimums and their ratios (target: apmpo / grpo <= 1.03).

    python benchmarks/step_overhead.py                      # the embedded default's model and batch
    python benchmarks/step_overhead.py --set local.tiny_model.hidden_size=256 --set local.tiny_model.num_layers=4
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from apmpo_openrlhf.algorithms import get_policy_loss  # noqa: E402
from apmpo_openrlhf.config import load_config  # noqa: E402
from apmpo_openrlhf.local.trainer import Trainer  # noqa: E402


def use_method(trainer: Trainer, method: str) -> None:
    trainer.loss = get_policy_loss(method)
    trainer.loss_kwargs = trainer.loss.parameters(trainer.cfg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO_ROOT / "configs" / "local" / "default.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="training-config override, repeatable")
    ap.add_argument("--rollouts", type=int, default=3, help="distinct rollout batches (default 3)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repetitions per method and rollout (default 7)")
    ap.add_argument("--methods", nargs="+", default=["grpo", "apmpo"])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [*args.overrides, f"output_dir={tmp}", "local.progress_bar=false",
                                        "logging.tensorboard=false"])
        trainer = Trainer(cfg)
        # Rollouts from a partly trained policy would do too; the loss cost does not depend on rewards.
        batches = [trainer.collect()[:2] for _ in range(args.rollouts)]
        model0 = copy.deepcopy(trainer.model.state_dict())
        optim0 = copy.deepcopy(trainer.optimizer.state_dict())
        sched0 = copy.deepcopy(trainer.scheduler.state_dict())
        shuffle0 = trainer.shuffle_gen.get_state()
        times: dict[str, list[float]] = {m: [] for m in args.methods}
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        for rep in range(args.repeats + 1):  # repetition 0 warms up caches and is not counted
            order = args.methods if rep % 2 == 0 else list(reversed(args.methods))
            for rollout, rewards in batches:
                for method in order:
                    trainer.model.load_state_dict(model0)
                    trainer.optimizer.load_state_dict(optim0)
                    trainer.scheduler.load_state_dict(sched0)
                    trainer.shuffle_gen.set_state(shuffle0)
                    use_method(trainer, method)
                    sync()
                    t0 = time.perf_counter()
                    trainer.train_on(rollout, rewards)
                    sync()
                    if rep > 0:
                        times[method].append(time.perf_counter() - t0)

    n = cfg.rollout.prompts_per_step * cfg.rollout.n_samples_per_prompt
    print(f"device {trainer.device}, threads {torch.get_num_threads()}, model {sum(p.numel() for p in trainer.model.parameters()):,} "
          f"params, {n} samples/step, {cfg.optimizer_steps_per_rollout} optimizer steps/rollout, "
          f"{args.rollouts} rollouts x {args.repeats} repeats")
    for m, t in times.items():
        print(f"{m:>6}: median {statistics.median(t) * 1000:8.2f} ms/step  (min {min(t) * 1000:.2f}, max {max(t) * 1000:.2f})")
    if "grpo" in times and "apmpo" in times:
        ratio = statistics.median(times["apmpo"]) / statistics.median(times["grpo"])
        best = min(times["apmpo"]) / min(times["grpo"])
        print(f"apmpo / grpo = {ratio:.3f} (medians), {best:.3f} (minimums; robust to other load)  (target <= 1.03)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
