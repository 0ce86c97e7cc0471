"""reward_func for test_sql_loop.py: the project's reward_func on a mix of the model's responses and
crafted ones, inside the rollout actor (``--set openrlhf.remote_reward_url=<this file>``).

OpenRLHF loads this file by path in each vLLM rollout actor and calls ``reward_func`` once per
sample from worker threads. Per 8 consecutive calls: 1 response is the label's gold query (graded
correct), 1 a query that never ends (the grader's time limit: a timeout), 4 hostile statements
(writes, schema changes, ATTACH, PRAGMA, several statements, extension loading, file writes), and
2 the model's own responses. Each goes through apmpo_openrlhf/rewards/openrlhf_reward.py's
``reward_func`` unchanged: the same prompt/response split, label parsing, database resolution on
this worker and sandboxed execution as in training.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)

from apmpo_openrlhf.rewards.openrlhf_reward import reward_func as project_reward_func  # noqa: E402

PWNED = "/tmp/apmpo_sql_loop_pwned"  # must never come into existence
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


def hostile_statements(table: str) -> list[str]:
    return [
        f"DROP TABLE {table}",
        f"DELETE FROM {table}",
        f"UPDATE {table} SET rowid = rowid + 1000",
        f"INSERT INTO {table} DEFAULT VALUES",
        "CREATE TABLE pwned (x)",
        f"ATTACH DATABASE '{PWNED}.sqlite' AS pwned",
        "PRAGMA journal_mode = WAL",
        "PRAGMA user_version = 7",
        "VACUUM",
        f"SELECT * FROM {table}; DROP TABLE {table}",
        f"SELECT load_extension('{PWNED}')",
        f"SELECT writefile('{PWNED}.txt', 'x')",
        "BEGIN EXCLUSIVE",
        "REINDEX",
        f"ALTER TABLE {table} RENAME TO pwned",
        f"CREATE TRIGGER pwned AFTER INSERT ON {table} BEGIN DELETE FROM {table}; END",
    ]


_calls = itertools.count()  # next() on a count is atomic in CPython: safe from reward threads


def crafted_response(call: int, label: dict) -> str | None:
    """The response replacing the model's for this call, or None to grade the model's own."""
    kind = call % 8
    if kind == 0:
        sql = label["gold_sql"]
    elif kind == 1:
        sql = ENDLESS
    elif kind <= 5:
        table = re.search(r"\bfrom\s+([A-Za-z_]\w*)", label["gold_sql"], re.IGNORECASE).group(1)
        statements = hostile_statements(table)
        sql = statements[(call // 8 * 4 + kind - 2) % len(statements)]
    else:
        return None
    return f"```sql\n{sql}\n```"


def reward_func(queries, prompts, labels):
    crafted = []
    for query, prompt, label in zip(queries, prompts, labels):
        response = crafted_response(next(_calls), json.loads(label))
        crafted.append(query if response is None else prompt + response)
    return project_reward_func(crafted, prompts, labels)
