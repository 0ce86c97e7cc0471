"""Per-step metrics: ``<output_dir>/metrics.jsonl`` (always), TensorBoard and W&B (when configured)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import TrainConfig


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
        if cfg.logging.wandb is not None and os.environ.get("WANDB_MODE") != "disabled":
            import wandb

            w = cfg.logging.wandb
            self.wandb = wandb.init(
                project=w.project, entity=w.entity, name=w.run_name or cfg.name, mode=w.mode,
                dir=str(output_dir), config=cfg.model_dump(mode="json"), resume="allow",
                id=_wandb_run_id(output_dir),
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


def _wandb_run_id(output_dir: Path) -> str:
    """One W&B run per output_dir, so that a resumed run continues the same W&B run."""
    path = output_dir / "wandb_run_id"
    if path.exists():
        return path.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id)
    return run_id
