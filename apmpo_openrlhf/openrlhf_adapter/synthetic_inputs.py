"""Model and prompt files for a config that has none: the tiny model and the synthetic task.

A config with ``model.path: null`` (and/or ``data.train_path: null``) runs OpenRLHF on the same
inputs as the embedded default: the tiny Llama of ``local.tiny_model`` (built once, seeded, into
``<output_dir>/base_model``, where the local backend builds it too) and every problem of the
synthetic task ``local.task`` written as an OpenRLHF prompt dataset
(``<output_dir>/prompts/{train,eval}.jsonl``: ``{"prompt", "label", "datasource"}``, the label a
JSON object naming the reward). So a fresh machine needs nothing but the command. The labels name
``reward.task``: ``arithmetic`` (first integer of the response) or ``math`` (math-verify in the
killable grading workers, the path real math runs take).

The training file holds every problem the same number of times, as many as make it a whole number
of rollout batches: OpenRLHF draws an episode's prompts without replacement and ends it with what
is left, so 25 problems at 16 prompts per step would make every other step a short one of 9 prompts
(trimmed to whole data-parallel units: 8), half the data and half the optimizer steps of a full one;
400 rows (each problem 16 times) make 25 full steps per episode, as the local backend's steps are.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config import ConfigError, TrainConfig

SYNTHETIC_REWARDS = ("arithmetic", "math")
PROMPTS_DIR = "prompts"
DATASOURCE = "arithmetic"


def synthetic_paths(cfg: TrainConfig) -> dict[str, Path]:
    out = Path(cfg.output_dir)
    return {
        "model": out / "base_model",
        "train": out / PROMPTS_DIR / "train.jsonl",
        "eval": out / PROMPTS_DIR / "eval.jsonl",
    }


def needs_synthetic_inputs(cfg: TrainConfig) -> bool:
    return cfg.model.path is None or cfg.data.train_path is None


def _prompt_rows(cfg: TrainConfig):
    from ..data.prepare import label_json
    from ..tasks import arithmetic_problems

    t = cfg.local.task
    problems = arithmetic_problems(t.min_operand, t.max_operand, t.operations, t.max_answer, t.num_operands)
    for question, answer in problems:
        yield {"prompt": question, "label": label_json({"task": cfg.reward.task, "answer": answer}),
               "datasource": DATASOURCE}


def with_synthetic_inputs(cfg: TrainConfig, create: bool) -> TrainConfig:
    """``cfg`` with the null model/data paths pointing at the synthetic inputs; ``create`` builds
    the files that do not exist yet (the dry run only shows the paths)."""
    if not needs_synthetic_inputs(cfg):
        return cfg
    if cfg.data.train_path is None and cfg.reward.task not in SYNTHETIC_REWARDS:
        raise ConfigError(
            f"data.train_path is null, so the synthetic task's prompts are used; their labels need "
            f"reward.task in {list(SYNTHETIC_REWARDS)}, got {cfg.reward.task!r}"
        )
    paths = synthetic_paths(cfg)
    model = cfg.model
    data = cfg.data
    if model.path is None:
        model = model.model_copy(update={"path": str(paths["model"])})
        if create:
            from ..local.trainer import prepare_model_dir

            prepare_model_dir(cfg, Path(cfg.output_dir))  # the tiny model, as the local backend builds it
    if data.train_path is None:
        wants_eval = data.eval_path is None and (cfg.eval.at_step0 or cfg.eval.every_steps)
        data = data.model_copy(
            update={"train_path": str(paths["train"]), "eval_path": str(paths["eval"]) if wants_eval else data.eval_path}
        )
        if create:
            from ..data.prepare import write_jsonl

            rows = list(_prompt_rows(cfg))
            copies = cfg.rollout.prompts_per_step // math.gcd(len(rows), cfg.rollout.prompts_per_step)
            files = {"train": rows * copies, "eval": rows}  # evaluation: every problem once
            for key in ("train", "eval") if wants_eval else ("train",):
                if not paths[key].is_file():
                    write_jsonl(paths[key], files[key], desc=f"synthetic {key} prompts", total=len(files[key]))
    return cfg.model_copy(update={"model": model, "data": data})
