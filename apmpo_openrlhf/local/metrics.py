"""Per-step metrics: ``<output_dir>/metrics.jsonl`` (always), TensorBoard and W&B (when configured).

The JSONL files and the end-of-run summary are shared by both backends: the OpenRLHF trainer actor
writes the same files with the same metric names (:class:`JsonlLog`), and both runs end with
:func:`run_summary` / :func:`format_summary`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..config import TrainConfig
from ..wandb_setup import effective_mode as effective_wandb_mode
from ..wandb_setup import run_id as wandb_run_id


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop entries after ``last_step`` (written by a run that died after its last checkpoint)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut off by a kill: everything after it is gone too
        if row.get("step", 0) <= last_step:
            kept.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class JsonlLog:
    """``metrics.jsonl`` (one row per training step) and ``eval.jsonl`` (one row per evaluation) of a run.

    A fresh run (``start_step`` 0) starts both files anew; a resumed run keeps the rows up to its
    checkpoint's step and drops those a killed run wrote after it, so that every step appears once.
    """

    def __init__(self, output_dir: Path, start_step: int) -> None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / "metrics.jsonl"
        self.eval_path = output_dir / "eval.jsonl"
        for path in (self.path, self.eval_path):
            if start_step > 0:
                truncate_jsonl(path, start_step)
            elif path.exists():
                path.unlink()  # a fresh run starts fresh files
        self._files = {"train": self.path.open("a"), "eval": self.eval_path.open("a")}

    def last_row(self) -> dict | None:
        """The last training row kept (a resumed run continues its ``elapsed_s``)."""
        rows = read_metrics(self.path) if self.path.exists() else []
        return rows[-1] if rows else None

    def write(self, row: dict, kind: str = "train") -> None:
        f = self._files[kind]
        f.write(json.dumps(row) + "\n")
        f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()


class MetricsLogger:
    def __init__(self, cfg: TrainConfig, output_dir: Path, start_step: int) -> None:
        self.jsonl = JsonlLog(output_dir, start_step)
        self.path, self.eval_path = self.jsonl.path, self.jsonl.eval_path
        self.log_every = cfg.logging.log_every
        self.tb = None
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run wrote after its last checkpoint.
            self.tb = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step + 1)
        self.wandb = None
        if effective_wandb_mode(cfg) not in (None, "disabled"):
            import wandb

            w = cfg.logging.wandb
            self.wandb = wandb.init(
                project=w.project, entity=w.entity, name=w.run_name or cfg.name, mode=w.mode,
                dir=str(output_dir), config=cfg.model_dump(mode="json"), resume="allow",
                id=wandb_run_id(output_dir),
            )

    def log(self, row: dict, kind: str = "train") -> None:
        """Append ``row`` to metrics.jsonl (kind "train") or eval.jsonl (kind "eval"); mirror to TB/W&B."""
        self.jsonl.write(row, kind)
        step = row["step"]
        if kind == "train" and step % self.log_every != 0:
            return
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"{kind}/{k}", v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


# ----------------------------------------------------------------------------- end-of-run summary
def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last ``window`` values (shorter at the start); NaN (a step without
    that metric, e.g. all groups filtered) is skipped, and a window of only NaN gives NaN."""
    out = []
    for i in range(len(values)):
        w = [v for v in values[max(0, i - window + 1) : i + 1] if not math.isnan(v)]
        out.append(sum(w) / len(w) if w else math.nan)
    return out


def reward_curve_stats(rewards: list[float], edge_fraction: float = 0.1, tail_fraction: float = 0.25,
                       window: int = 20) -> dict:
    """How a training-reward curve starts, ends and holds up (issue #9's targets).

    first/last: mean over the first/last ``edge_fraction`` of steps (at least one step);
    tail_min_smoothed: the lowest ``window``-step moving average within the last ``tail_fraction``
    of steps (a late collapse shows up here even when the final mean looks fine).
    """
    n = len(rewards)
    if n == 0:
        raise ValueError("rewards: empty curve")
    k = max(1, round(n * edge_fraction))
    smooth = moving_average(rewards, window)
    tail = smooth[n - max(1, round(n * tail_fraction)):]
    return {
        "steps": n,
        "first": sum(rewards[:k]) / k,
        "last": sum(rewards[-k:]) / k,
        "edge_steps": k,
        "tail_min_smoothed": min(tail),
        "window": window,
    }


def check_targets(results: list[dict], targets: dict[str, tuple[str, float]]) -> tuple[bool, list[str]]:
    """Whether every run meets every target ``{key: ("<=" | ">=", bound)}``; one line per target
    with the worst run's value (the seed-table benchmarks)."""
    ok, lines = True, []
    for key, (op, bound) in targets.items():
        values = [r[key] for r in results]
        worst = max(values) if op == "<=" else min(values)
        met = worst <= bound if op == "<=" else worst >= bound
        ok &= met
        lines.append(f"{key} {op} {bound} for every seed: {'yes' if met else 'NO'} (worst {worst:.3f})")
    return ok, lines


# Stages a step's time is split into (metrics ``timing/<name>``, seconds; the OpenRLHF backend logs
# them), in pipeline order, with their names in the summary. Reward grading runs inside the
# generation stage (the vLLM engines grade each response as it finishes): its time is part of
# ``generation`` and summed over responses that are graded concurrently, so it is shown inside it.
STAGES = {
    "generation": "generation",
    "reward_grading": "reward grading",
    "make_experience": "experience making",
    "ppo_train": "training",
    "broadcast": "weight broadcast",
    "loop_checks": "loop checks",
}
STAGE_INSIDE = {"reward_grading": "generation"}
# The OpenRLHF backend's full log (driver, Ray, vLLM, DeepSpeed), listed with the outputs.
PIPELINE_LOG = "pipeline.log"


def stage_times(rows: list[dict]) -> dict[str, float]:
    """Seconds per stage summed over the steps (``timing/<stage>`` columns; empty when none are logged)."""
    names = [k.removeprefix("timing/") for row in rows for k in row if k.startswith("timing/")]
    known = [n for n in STAGES if n in names]
    other = sorted({n for n in names if n not in STAGES and n != "step_total"})
    return {n: float(sum(row.get(f"timing/{n}", 0.0) for row in rows)) for n in known + other}


def run_summary(output_dir: Path, wall_s: float | None = None) -> dict:
    """The numbers a person wants at the end of a run, from its metrics.jsonl and eval.jsonl."""
    output_dir = Path(output_dir)
    rows = read_metrics(output_dir / "metrics.jsonl")
    evals = read_metrics(output_dir / "eval.jsonl") if (output_dir / "eval.jsonl").exists() else []
    if not rows:
        raise ValueError(f"{output_dir / 'metrics.jsonl'}: no training steps logged")
    last = rows[-1]
    out = {
        "output_dir": str(output_dir),
        "reward": reward_curve_stats([r["reward_mean"] for r in rows]),
        "eval": [(e["step"], e["eval_reward_mean"]) for e in evals],
        "p": last.get("p"),
        "eps_high": last.get("eps_high"),
        "entropy": last.get("entropy"),
        "train_s": last.get("elapsed_s"),
        "wall_s": wall_s,
        "final_model": str(output_dir / "final_model") if (output_dir / "final_model").is_dir() else None,
    }
    stages = stage_times(rows)
    if stages:
        out["stages"] = stages
    return out


def format_stages(stages: dict[str, float]) -> str:
    """``generation 52 s (reward grading 0.3 s inside it), training 40 s, ...``"""
    parts = []
    for name, seconds in stages.items():
        if name in STAGE_INSIDE:
            continue
        text = f"{STAGES.get(name, name)} {seconds:.0f} s"
        inside = [f"{STAGES[n]} {stages[n]:.1f} s" for n, host in STAGE_INSIDE.items() if host == name and n in stages]
        if inside:
            text += f" ({', '.join(inside)} inside it)"
        parts.append(text)
    return ", ".join(parts)


def format_summary(s: dict) -> str:
    r = s["reward"]
    k = r["edge_steps"]
    lines = [
        f"summary of {r['steps']} steps",
        f"  train reward    {r['first']:.3f} (first {k} steps) -> {r['last']:.3f} (last {k} steps); "
        f"lowest {r['window']}-step mean in the last quarter {r['tail_min_smoothed']:.3f}",
    ]
    if s["eval"]:
        (s0, e0), (s1, e1) = s["eval"][0], s["eval"][-1]
        lines.append(f"  eval reward     {e0:.3f} at step {s0} -> {e1:.3f} at step {s1}")
    if s["p"] is not None:
        end = f"  at the end      p {s['p']:.3f}, eps_high {s['eps_high']:.3f}"
        if s["entropy"] is not None:
            end += f", token entropy {s['entropy']:.3f}"
        lines.append(end)
    t = f"  time            training {s['train_s']:.0f} s"
    if s["wall_s"] is not None:
        t += f", wall {s['wall_s']:.0f} s (with start-up and evaluation)"
    lines.append(t)
    if s.get("stages"):
        lines.append(f"  time per stage  {format_stages(s['stages'])}")
    d = s["output_dir"]
    lines.append(f"  outputs         {d}/metrics.jsonl, eval.jsonl, summary.json, checkpoints/"
                 + (", final_model/" if s["final_model"] else "")
                 + (", tensorboard/" if Path(d, "tensorboard").is_dir() else "")
                 + (f", {PIPELINE_LOG}" if Path(d, PIPELINE_LOG).is_file() else ""))
    return "\n".join(lines)
