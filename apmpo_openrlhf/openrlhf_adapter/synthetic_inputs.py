"""Model and prompt files for a config that has none: a tiny model and a small prompt set.

A config with ``model.path: null`` (and/or ``data.train_path: null``) builds its inputs into
``output_dir`` on first run, so a fresh machine needs nothing but the command (and, for the
benchmark tasks, the data directory):

- the model (``<output_dir>/base_model``, seeded, sized by ``local.tiny_model``): the tiny Llama of
  the embedded default, or with ``openrlhf.max_images_per_prompt > 0`` the tiny Qwen2.5-VL of
  ``models/tiny_vl.py``. Its context (``max_position_embeddings``) is at least the run's
  ``rollout.max_prompt_len + rollout.max_new_tokens``.
- the prompts (``<output_dir>/prompts/{train,eval}.jsonl``: ``{"prompt", "label", "datasource"}``,
  the label a JSON object naming the reward), by ``reward.task``:

  - ``arithmetic`` / ``math``: every problem of the synthetic task ``local.task`` (first integer of
    the response, or math-verify in the killable grading workers);
  - ``choice``: Geometry3K problems with their diagrams from the data directory
    (``$APMPO_DATA_DIR``, else ``./data``: ``geometry3k/<split>/``), the first
    :data:`BENCHMARK_TRAIN_PROMPTS` of the first split present among ``train``, ``test`` for training
    and the next :data:`BENCHMARK_EVAL_PROMPTS` for evaluation, written exactly as
    ``python -m apmpo_openrlhf.data geometry3k`` writes them (the diagrams copied under
    ``prompts/images``); needs ``openrlhf.max_images_per_prompt >= 1``;
  - ``sql``: Spider dev questions (``sql/spider/dev.json`` and its databases) whose prompt (database
    schema + question, as ``python -m apmpo_openrlhf.data sql`` writes it) fits
    ``rollout.max_prompt_len`` tokens of the model's tokenizer, in file order; labels name
    ``db_id`` and the ``db_root`` of the data directory, which the SQL reward resolves in the
    rollout actors (``$APMPO_SQL_DB_ROOT`` there overrides it).

The training file holds every training prompt the same number of times, as many as make it a whole
number of rollout batches: OpenRLHF draws an episode's prompts without replacement and ends it with
what is left, so 25 problems at 16 prompts per step would make every other step a short one of 9
prompts (trimmed to whole data-parallel units: 8), half the data and half the optimizer steps of a
full one; 400 rows (each problem 16 times) make 25 full steps per episode, as the local backend's
steps are. Evaluation prompts are written once each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..config import ConfigError, TrainConfig

SYNTHETIC_REWARDS = ("arithmetic", "math")
BENCHMARK_REWARDS = ("choice", "sql")
PROMPTS_DIR = "prompts"
DATASOURCE = "arithmetic"
BENCHMARK_TRAIN_PROMPTS = 32
BENCHMARK_EVAL_PROMPTS = 8
GEOMETRY_SPLITS = ("train", "test")


def synthetic_paths(cfg: TrainConfig) -> dict[str, Path]:
    out = Path(cfg.output_dir)
    return {
        "model": out / "base_model",
        "train": out / PROMPTS_DIR / "train.jsonl",
        "eval": out / PROMPTS_DIR / "eval.jsonl",
    }


def needs_synthetic_inputs(cfg: TrainConfig) -> bool:
    return cfg.model.path is None or cfg.data.train_path is None


def context_length(cfg: TrainConfig) -> int:
    """Tokens a sequence of the run may hold (OpenRLHF's ``--data.max_len``)."""
    return cfg.rollout.max_prompt_len + cfg.rollout.max_new_tokens


def _check_benchmark_inputs(cfg: TrainConfig) -> None:
    task = cfg.reward.task
    if task not in SYNTHETIC_REWARDS + BENCHMARK_REWARDS:
        raise ConfigError(
            f"data.train_path is null, so the prompts are built for reward.task; that works for "
            f"reward.task in {list(SYNTHETIC_REWARDS + BENCHMARK_REWARDS)}, got {task!r}"
        )
    images = cfg.openrlhf.max_images_per_prompt > 0
    if task == "choice" and not (images and cfg.data.image_key):
        raise ConfigError(
            "data.train_path is null with reward.task 'choice': the Geometry3K prompts carry their diagrams, so "
            "set openrlhf.max_images_per_prompt: 1 and data.image_key: images (a vision-language model)"
        )
    if task != "choice" and images and cfg.data.train_path is None:
        raise ConfigError(
            f"openrlhf.max_images_per_prompt = {cfg.openrlhf.max_images_per_prompt}, but the prompts built for "
            f"reward.task {task!r} have no images: use reward.task 'choice' (Geometry3K) or give data.train_path"
        )


def _build_model(cfg: TrainConfig, path: Path) -> None:
    t = cfg.local.tiny_model
    context = max(512, context_length(cfg))
    if cfg.openrlhf.max_images_per_prompt > 0:
        from ..models.tiny_vl import build_tiny_vl_model

        build_tiny_vl_model(path, hidden_size=t.hidden_size, num_layers=t.num_layers,
                            max_position_embeddings=context, seed=cfg.seed)
    elif context > 512 or cfg.reward.task in BENCHMARK_REWARDS:
        from ..models.tiny import build_tiny_model

        build_tiny_model(path, hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.hidden_size // 32,
                         intermediate_size=t.intermediate_size, max_position_embeddings=context, seed=cfg.seed)
    else:
        from ..local.trainer import prepare_model_dir

        prepare_model_dir(cfg, Path(cfg.output_dir))  # the tiny model, as the local backend builds it


def _arithmetic_rows(cfg: TrainConfig):
    from ..data.prepare import label_json
    from ..tasks import arithmetic_problems

    t = cfg.local.task
    problems = arithmetic_problems(t.min_operand, t.max_operand, t.operations, t.max_answer, t.num_operands)
    rows = [{"prompt": question, "label": label_json({"task": cfg.reward.task, "answer": answer}),
             "datasource": DATASOURCE} for question, answer in problems]
    return rows, rows


def _geometry_rows(cfg: TrainConfig, out: Path):
    from ..data import sources
    from ..data.prepare import geometry_rows
    from ..paths import data_dir

    root = data_dir() / "geometry3k"
    split = next((s for s in GEOMETRY_SPLITS if (root / s).is_dir()), None)
    if split is None:
        raise ConfigError(
            f"reward.task 'choice' with data.train_path null reads Geometry3K from the data directory, but "
            f"{root} has none of the splits {list(GEOMETRY_SPLITS)} (set APMPO_DATA_DIR, or fetch it: "
            "python -m apmpo_openrlhf.data fetch --only geometry3k --out DATA_DIR)"
        )
    wanted = BENCHMARK_TRAIN_PROMPTS + BENCHMARK_EVAL_PROMPTS
    records = [r for _, r in zip(range(wanted), sources.load_geometry3k(split, root))]
    rows = list(geometry_rows(records, out / PROMPTS_DIR / "images" / split, f"geometry3k_{split}"))
    return rows[:BENCHMARK_TRAIN_PROMPTS], rows[BENCHMARK_TRAIN_PROMPTS:]


def prompt_tokens(tokenizer, messages) -> int:
    """Length of a chat prompt as OpenRLHF tokenizes it (chat template, no extra special tokens)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _sql_rows(cfg: TrainConfig, model_path: str):
    from transformers import AutoTokenizer

    from ..data import sources
    from ..data.prepare import SchemaSource, sql_rows
    from ..paths import data_dir

    root = data_dir()
    spider = sources.spider_root(root)
    if not (spider / "dev.json").is_file() or not (spider / "database").is_dir():
        raise ConfigError(
            f"reward.task 'sql' with data.train_path null reads Spider dev from the data directory, but "
            f"{spider} has no dev.json and database/ (set APMPO_DATA_DIR, or fetch it: "
            "python -m apmpo_openrlhf.data fetch --only spider --out DATA_DIR)"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    schemas = SchemaSource(spider / "database", None)
    wanted = BENCHMARK_TRAIN_PROMPTS + BENCHMARK_EVAL_PROMPTS
    rows = []
    for row in sql_rows(sources.load_spider_dev(root), schemas, "spider_dev", require_db=True, skipped={}):
        if prompt_tokens(tokenizer, row["prompt"]) <= cfg.rollout.max_prompt_len:
            rows.append(row)
            if len(rows) == wanted:
                break
    if len(rows) < cfg.rollout.prompts_per_step:
        raise ConfigError(
            f"only {len(rows)} Spider dev prompts fit rollout.max_prompt_len = {cfg.rollout.max_prompt_len} tokens; "
            f"a step needs rollout.prompts_per_step = {cfg.rollout.prompts_per_step}: raise rollout.max_prompt_len"
        )
    return rows[:BENCHMARK_TRAIN_PROMPTS], rows[BENCHMARK_TRAIN_PROMPTS:]


def _prompt_rows(cfg: TrainConfig, model_path: str):
    """(train rows, eval rows) for reward.task (module docstring)."""
    task = cfg.reward.task
    if task == "choice":
        return _geometry_rows(cfg, Path(cfg.output_dir))
    if task == "sql":
        return _sql_rows(cfg, model_path)
    return _arithmetic_rows(cfg)


def with_synthetic_inputs(cfg: TrainConfig, create: bool) -> TrainConfig:
    """``cfg`` with the null model/data paths pointing at the built inputs; ``create`` builds the
    files that do not exist yet (the dry run only shows the paths)."""
    if not needs_synthetic_inputs(cfg):
        return cfg
    if cfg.data.train_path is None:
        _check_benchmark_inputs(cfg)
    paths = synthetic_paths(cfg)
    model = cfg.model
    data = cfg.data
    if model.path is None:
        model = model.model_copy(update={"path": str(paths["model"])})
        if create:
            _build_model(cfg, paths["model"])
    if data.train_path is None:
        wants_eval = data.eval_path is None and (cfg.eval.at_step0 or cfg.eval.every_steps)
        data = data.model_copy(
            update={"train_path": str(paths["train"]), "eval_path": str(paths["eval"]) if wants_eval else data.eval_path}
        )
        keys = ("train", "eval") if wants_eval else ("train",)
        if create and not all(paths[key].is_file() for key in keys):
            from ..data.prepare import write_jsonl

            train_rows, eval_rows = _prompt_rows(cfg, model.path)
            if wants_eval and not eval_rows:
                raise ConfigError(f"no evaluation prompts left for reward.task {cfg.reward.task!r}: set eval.at_step0 "
                                  "false and eval.every_steps null, or give data.eval_path")
            copies = cfg.rollout.prompts_per_step // math.gcd(len(train_rows), cfg.rollout.prompts_per_step)
            for key, rows in (("train", train_rows * copies), ("eval", eval_rows)):
                if key in keys and not paths[key].is_file():
                    write_jsonl(paths[key], rows, desc=f"{key} prompts", total=len(rows))
    return cfg.model_copy(update={"model": model, "data": data})


def prompt_labels(path: str | Path) -> list[dict]:
    """The parsed labels of a prompt file (e.g. the SQL databases a run grades against)."""
    labels = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            label = json.loads(line)["label"]
            labels.append(json.loads(label) if isinstance(label, str) else label)
    return labels
