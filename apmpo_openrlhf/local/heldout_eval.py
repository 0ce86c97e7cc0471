"""Pass@1..n on the synthetic task's held-out problems (``local.heldout_eval``).

n samples per held-out problem (problems never trained on: ``local.task.heldout_fraction``), graded
with the run's reward; Pass@k for every k = 1..n with the unbiased estimator of the evaluation
harness (:func:`evaluation.metrics.pass_at_k`), averaged over problems. Rows go to
``<output_dir>/heldout.jsonl``; the evaluation at the end of training also to ``heldout.json``.
Sampling runs under a forked RNG, so evaluating never changes the training trajectory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .metrics import truncate_jsonl

JSONL, FINAL = "heldout.jsonl", "heldout.json"


def pass_at_k_curve(correct: list[int], n: int) -> dict[str, float]:
    """{"1": Pass@1, ..., "n": Pass@n}: the mean over problems of the unbiased estimator."""
    from evaluation.metrics import pass_at_k

    return {str(k): sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in range(1, n + 1)}


@torch.no_grad()
def heldout_pass_at_k(trainer) -> dict:
    cfg, h = trainer.cfg, trainer.cfg.local.heldout_eval
    records = trainer.eval_prompts
    rollout, rewards = trainer.sample_and_grade(records, h.n_samples, h.temperature, h.top_p,
                                                seed=cfg.seed * 100_003 + trainer.step + 50_021)
    rewards = rewards.view(len(records), h.n_samples)
    correct = [int(c) for c in (rewards >= 1.0).sum(-1).tolist()]
    curve = pass_at_k_curve(correct, h.n_samples)
    return {
        "step": trainer.step,
        "split": "heldout" if cfg.local.task.heldout_fraction > 0 and cfg.data.train_path is None else "eval",
        "problems": len(records),
        "n_samples": h.n_samples,
        "temperature": h.temperature,
        "pass@1": curve["1"],
        f"pass@{h.n_samples}": curve[str(h.n_samples)],
        "pass_at_k": curve,
        "distinct_correct_fraction": sum(c > 0 for c in correct) / len(correct),
        "response_length": float(rollout.response_lengths.float().mean()),
    }


class HeldoutLog:
    """heldout.jsonl (truncated to the resumed step like metrics.jsonl) and heldout.json."""

    def __init__(self, output_dir: Path, start_step: int) -> None:
        self.dir = Path(output_dir)
        path = self.dir / JSONL
        if start_step > 0:
            truncate_jsonl(path, start_step)
        else:
            path.unlink(missing_ok=True)
            (self.dir / FINAL).unlink(missing_ok=True)

    def log(self, row: dict, final: bool) -> None:
        with (self.dir / JSONL).open("a") as f:
            f.write(json.dumps(row) + "\n")
        if final:
            (self.dir / FINAL).write_text(json.dumps(row, indent=1) + "\n")
