"""Per-step metrics: ``<output_dir>/metrics.jsonl`` (always), TensorBoard and W&B (when configured)."""

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


class MetricsLogger:
    def __init__(self, cfg: TrainConfig, output_dir: Path, start_step: int) -> None:
        self.path = output_dir / "metrics.jsonl"
        self.eval_path = output_dir / "eval.jsonl"
        for path in (self.path, self.eval_path):
            if start_step > 0:
                truncate_jsonl(path, start_step)
            elif path.exists():
                path.unlink()  # a fresh run starts fresh files
        self._file = self.path.open("a")
        self._eval_file = self.eval_path.open("a")
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
        f = self._file if kind == "train" else self._eval_file
        f.write(json.dumps(row) + "\n")
        f.flush()
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
        self._file.close()
        self._eval_file.close()
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
    return out


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
        lines.append(f"  at the end      p {s['p']:.3f}, eps_high {s['eps_high']:.3f}, token entropy {s['entropy']:.3f}")
    t = f"  time            training {s['train_s']:.0f} s"
    if s["wall_s"] is not None:
        t += f", wall {s['wall_s']:.0f} s (with start-up and evaluation)"
    lines.append(t)
    d = s["output_dir"]
    lines.append(f"  outputs         {d}/metrics.jsonl, eval.jsonl, summary.json, checkpoints/"
                 + (", final_model/" if s["final_model"] else "")
                 + (", tensorboard/" if Path(d, "tensorboard").is_dir() else ""))
    return "\n".join(lines)
