"""The benchmark registry: one entry per benchmark names its file, task, prompt and answer field.

Records are read by :mod:`apmpo_openrlhf.data.sources` (the loaders training data preparation
uses) and turned into chat prompts by :mod:`apmpo_openrlhf.prompts` (SPEC.md 6), so evaluation
prompts match training prompts. Grading labels follow :mod:`apmpo_openrlhf.rewards`'s schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apmpo_openrlhf.paths import data_dir as resolve_data_dir

from . import _loaders
from .problems import BenchmarkSpec, LoadedBenchmark, LoadOptions, Problem

__all__ = ["BENCHMARKS", "MATH_BENCHMARKS", "BenchmarkSpec", "LoadOptions", "LoadedBenchmark",
           "Problem", "load_benchmark"]


BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in [
        BenchmarkSpec("math500", "Math500", "math", "math_eval/math500/test.jsonl", "answer",
                      ("subject", "level"), loader=_loaders.load_math),
        BenchmarkSpec("aime24", "AIME24", "math", "math_eval/aime24/test.jsonl", "answer", loader=_loaders.load_math),
        BenchmarkSpec("aime25", "AIME25", "math", "math_eval/aime25/test.jsonl", "answer", loader=_loaders.load_math),
        BenchmarkSpec("amc23", "AMC23", "math", "math_eval/amc23/test.jsonl", "answer", loader=_loaders.load_math),
        BenchmarkSpec("minerva", "Minerva", "math", "math_eval/minerva_math/test.jsonl",
                      "last \\boxed{} of solution", ("type",), loader=_loaders.load_math),
        BenchmarkSpec("olympiadbench", "Olympiad", "math", "math_eval/olympiadbench/test.jsonl", "final_answer",
                      ("subfield", "answer_type"), loader=_loaders.load_math),
        BenchmarkSpec("spider", "Spider", "sql", "sql/spider/dev.json", "query (executed on the database)",
                      ("db_id",), loader=_loaders.load_sql),
        BenchmarkSpec("bird", "BIRD", "sql", "sql/bird/dev.json", "SQL (executed on the database)",
                      ("db_id",), loader=_loaders.load_sql),
        BenchmarkSpec("geometry3k", "Geometry3K", "choice", "geometry3k/test", "answer (choice letter)",
                      multimodal=True, loader=_loaders.load_geometry3k),
    ]
}
MATH_BENCHMARKS = ("math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench")


def benchmark_path(name: str, options: LoadOptions) -> Path:
    if name in options.paths:
        return Path(options.paths[name])
    return resolve_data_dir(options.data_dir) / BENCHMARKS[name].default_path


def load_benchmark(name: str, options: LoadOptions) -> LoadedBenchmark:
    """Problems of benchmark ``name`` (the first ``options.limit``); FileNotFoundError names what is missing."""
    spec = BENCHMARKS[name]
    path = benchmark_path(name, options)
    if not path.exists():
        raise FileNotFoundError(
            f"benchmark file for {name} not found: {path} (set --data-dir, $APMPO_DATA_DIR, or "
            f"--benchmark-path {name}=PATH; expected layout: <data-dir>/{spec.default_path})")
    extra: dict[str, Any] = {}
    problems = spec.loader(spec, path, options, extra)
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: problem ids are not unique")
    return LoadedBenchmark(spec, path, problems, extra)
