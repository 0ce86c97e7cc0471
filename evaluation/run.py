"""``python -m evaluation.run``: sample a model on benchmarks, grade, and write metrics (resumable).

Layout under ``--out``::

    run.json                      settings of the run (model, method, sampling, seed, harness commit)
    <benchmark>/generations.jsonl one line per generated sample (written before grading)
    <benchmark>/samples.jsonl     one line per graded sample: problem id, prompt, response,
                                  extracted answer, correct, tokens, ...
    <benchmark>/metrics.json      Pass@1, Pass@k, lengths, truncation, breakdowns + exact settings

Rerunning the same command after a crash or Ctrl-C continues: finished generations and grades
are kept (keyed by problem id and sample index) and only the rest is done.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from apmpo_openrlhf.data.sources import DataFormatError

from ._cli import HelpFormatter
from .backends import BACKENDS, SamplingSettings, make_backend
from .backends.base import is_multimodal_model
from .benchmarks import BENCHMARKS, MATH_BENCHMARKS, LoadOptions, Problem, load_benchmark
from .grading import grade_problems
from .metrics import summarize
from .run_info import resolve_run_identity
from .store import JsonlStore, StoreCorruptError, write_json_atomic

HARNESS_ROOT = Path(__file__).resolve().parents[1]

# Settings that fix what a sample is: a rerun into the same --out must keep them.
_FIXED_SETTINGS = ("model", "backend", "n", "temperature", "top_p", "max_tokens", "seed", "prompt_style")


class UsageError(Exception):
    """Bad command-line input or missing files; printed without a traceback, exit code 2."""


def harness_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HARNESS_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def problem_seed(seed: int, benchmark: str, problem_id: str) -> int:
    """A per-problem sampling seed: samples do not depend on chunking, ordering or resume."""
    digest = hashlib.sha256(f"{seed}\0{benchmark}\0{problem_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.run",
        description="Evaluate a model on the paper's benchmarks (SPEC.md 6): n samples per problem, "
        "graded by apmpo_openrlhf.rewards; Pass@1, unbiased Pass@k, response length, truncation rate. "
        "Resumable: rerun the same command to continue an interrupted run.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="Hugging Face model directory (local path) to evaluate")
    p.add_argument("--benchmarks", default=",".join(MATH_BENCHMARKS),
                   help=f"comma-separated benchmarks, from: {', '.join(BENCHMARKS)} (default: the six math "
                   "benchmarks of Table 1; SQL models take spider,bird and the VL model geometry3k, SPEC.md 6)")
    p.add_argument("--out", required=True, help="output directory of this run (created; reused to resume)")
    p.add_argument("--n", type=int, default=16, help="samples per problem")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (> 0)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling, in (0, 1]")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="maximum response tokens (default: 3072 for Qwen2.5-Math models, 8192 for R1-Distill, "
                   "4096 otherwise, as in SPEC.md 6)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (each problem derives its own from it)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first K problems of each benchmark")
    p.add_argument("--backend", choices=BACKENDS, default="vllm",
                   help="vllm: offline batch inference (production); hf: transformers (CPU, small models)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallel GPUs")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM memory fraction")
    p.add_argument("--max-model-len", type=int, default=None, help="context length limit (prompt + response)")
    p.add_argument("--dtype", default="auto", help="model dtype: auto, bfloat16, float16, float32")
    p.add_argument("--enforce-eager", action="store_true", help="vLLM: no CUDA graphs / compilation")
    p.add_argument("--prompt-style", choices=("auto", "qwen", "r1"), default="auto",
                   help="math prompt: qwen = instruction as system message; r1 = appended to the problem "
                   "(DeepSeek-R1-Distill); auto picks r1 when the model path names R1-Distill")
    p.add_argument("--data-dir", default=None,
                   help="benchmark data root (default: $APMPO_DATA_DIR, else ./data; layout of ../shared/data)")
    p.add_argument("--benchmark-path", action="append", default=[], metavar="NAME=PATH",
                   help="file or folder of one benchmark, overriding its place under --data-dir (repeatable)")
    p.add_argument("--spider-db-dir", default=None,
                   help="Spider databases folder (<db_id>/<db_id>.sqlite); default <data-dir>/sql/spider/database")
    p.add_argument("--bird-db-dir", default=None,
                   help="BIRD dev databases folder (<db_id>/<db_id>.sqlite); required for bird (not in the shared data)")
    p.add_argument("--skip-missing-db", action="store_true",
                   help="drop SQL problems whose database file is missing (counted in metrics.json) instead of failing")
    p.add_argument("--chunk-size", type=int, default=128,
                   help="problems per generation call; an interruption loses at most one chunk")
    p.add_argument("--grade-batch-size", type=int, default=512, help="samples graded (and saved) per batch")
    p.add_argument("--method", default=None,
                   help="training method shown in reports (default: from the model's training config, else 'base')")
    p.add_argument("--model-name", default=None,
                   help="model name shown in reports (default: from the training config, else the model folder name)")
    p.add_argument("--train-seed", type=int, default=None,
                   help="training seed of the checkpoint, for mean/std over seeds (default: from the training config)")
    p.add_argument("--run-name", default=None, help="label of this run (default: the --out folder name)")
    p.add_argument("--stop-after-chunks", type=int, default=None,
                   help="TEST HOOK: behave as if Ctrl-C was pressed after this many generation chunks")
    return p


def _parse_paths(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--benchmark-path must look like NAME=PATH, got {item!r}")
        if name not in BENCHMARKS:
            raise UsageError(f"--benchmark-path {item!r}: unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        out[name] = Path(path).expanduser()
    return out


def validate_args(args: argparse.Namespace) -> list[str]:
    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    if not names:
        raise UsageError("--benchmarks is empty")
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown:
        raise UsageError(f"--benchmarks: unknown {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if len(set(names)) != len(names):
        raise UsageError(f"--benchmarks lists a benchmark twice: {args.benchmarks}")
    checks = [
        (args.n >= 1, f"--n must be >= 1, got {args.n}"),
        (args.temperature > 0, f"--temperature must be > 0 (sampling), got {args.temperature}"),
        (0 < args.top_p <= 1, f"--top-p must lie in (0, 1], got {args.top_p}"),
        (args.max_tokens is None or args.max_tokens >= 1, f"--max-tokens must be >= 1, got {args.max_tokens}"),
        (args.limit is None or args.limit >= 1, f"--limit must be >= 1, got {args.limit}"),
        (args.chunk_size >= 1, f"--chunk-size must be >= 1, got {args.chunk_size}"),
        (args.grade_batch_size >= 1, f"--grade-batch-size must be >= 1, got {args.grade_batch_size}"),
        (args.tensor_parallel_size >= 1, f"--tensor-parallel-size must be >= 1, got {args.tensor_parallel_size}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    model = Path(args.model).expanduser()
    if not model.is_dir():
        raise UsageError(f"--model {args.model}: model directory not found (give a local Hugging Face model folder)")
    if not (model / "config.json").is_file():
        raise UsageError(f"--model {args.model}: no config.json there, so it is not a Hugging Face model folder")
    return names


def default_max_tokens(model: str) -> int:
    name = model.lower()
    if "r1-distill" in name:
        return 8192
    if "qwen2.5-math" in name:
        return 3072
    return 4096


def resolve_prompt_style(style: str, model: str) -> str:
    if style != "auto":
        return style
    return "r1" if "r1-distill" in model.lower() else "qwen"


def _check_same_settings(out: Path, settings: dict) -> None:
    path = out / "run.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    diffs = [f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in _FIXED_SETTINGS if old.get(k) != settings.get(k)]
    if diffs:
        raise UsageError(f"--out {out} holds a run with other settings ({'; '.join(diffs)}); "
                         "resume needs the same settings: use another --out or delete the old one")


def generate_benchmark(name: str, problems: list[Problem], store: JsonlStore, backend_factory, sampling: SamplingSettings,
                       seed: int, chunk_size: int, chunk_budget: list[int | None]) -> None:
    """Generate the missing samples of ``problems`` in chunks, saving each chunk before the next."""
    pending = [pr for pr in problems if any((pr.id, i) not in store for i in range(sampling.n))]
    if not pending:
        return
    backend = backend_factory()
    with tqdm(total=len(problems), initial=len(problems) - len(pending), desc=f"generate {name}", unit="problem") as bar:
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start : start + chunk_size]
            seeds = [problem_seed(seed, name, pr.id) for pr in chunk]
            completions = backend.generate([pr.prompt for pr in chunk], seeds, sampling)
            records = []
            for pr, s, comps in zip(chunk, seeds, completions):
                if len(comps) != sampling.n:
                    raise RuntimeError(f"backend returned {len(comps)} samples for {pr.id}, expected {sampling.n}")
                prompt_text = backend.render(pr.prompt)
                for i, c in enumerate(comps):
                    records.append({"problem_id": pr.id, "sample_index": i, "prompt": prompt_text,
                                    "response": c.text, "tokens": c.tokens, "finish_reason": c.finish_reason,
                                    "seed": s})
            store.append(records)
            bar.update(len(chunk))
            if chunk_budget[0] is not None:
                chunk_budget[0] -= 1
                if chunk_budget[0] <= 0:
                    raise KeyboardInterrupt("--stop-after-chunks reached (test hook)")


def grade_benchmark(name: str, problems: list[Problem], generations: JsonlStore, samples: JsonlStore, n: int,
                    batch_size: int) -> None:
    by_id = {pr.id: pr for pr in problems}
    todo = [(by_id[pid], g) for pid in by_id for i in range(n)
            if (pid, i) not in samples and (g := generations.get((pid, i))) is not None]
    if not todo:
        return
    with tqdm(total=len(todo), desc=f"grade {name}", unit="sample") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            grades = grade_problems([pr for pr, _ in batch], [g["response"] for _, g in batch])
            records = []
            for (pr, g), grade in zip(batch, grades):
                records.append({
                    "problem_id": pr.id, "sample_index": g["sample_index"], "prompt": g["prompt"],
                    "response": g["response"], "extracted_answer": grade.extracted, "gold": pr.gold,
                    "correct": grade.correct, "score": grade.score, "reason": grade.reason, "tokens": g["tokens"],
                    "finish_reason": g["finish_reason"], "meta": pr.meta,
                })
            samples.append(records)
            bar.update(len(batch))


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, DataFormatError, StoreCorruptError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished generations are saved under {args.out}; rerun the same command to continue",
              file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    names = validate_args(args)
    model = str(Path(args.model).expanduser().resolve())
    out = Path(args.out)
    prompt_style = resolve_prompt_style(args.prompt_style, model)
    max_tokens = args.max_tokens or default_max_tokens(model)
    identity = resolve_run_identity(model, method=args.method, model_name=args.model_name,
                                    train_seed=args.train_seed, run_name=args.run_name or out.resolve().name)
    options = LoadOptions(data_dir=args.data_dir, paths=_parse_paths(args.benchmark_path),
                          spider_db_dir=args.spider_db_dir, bird_db_dir=args.bird_db_dir,
                          skip_missing_db=args.skip_missing_db, prompt_style=prompt_style, limit=args.limit)
    # Load every benchmark first: a missing file fails before any model is loaded.
    loaded = {name: load_benchmark(name, options) for name in names}

    settings = {
        "model": model, "backend": args.backend, "n": args.n, "temperature": args.temperature,
        "top_p": args.top_p, "max_tokens": max_tokens, "seed": args.seed, "prompt_style": prompt_style,
        **identity, "tensor_parallel_size": args.tensor_parallel_size, "dtype": args.dtype,
        "max_model_len": args.max_model_len, "harness_commit": harness_commit(),
    }
    _check_same_settings(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    run_json = {**settings, "benchmarks": sorted(set(names) | set(_old_benchmarks(out))),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(out / "run.json", run_json)

    sampling = SamplingSettings(n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=max_tokens)
    backend_holder = []

    def backend_factory():
        # The model is loaded only when something is left to generate.
        if not backend_holder:
            backend_holder.append(make_backend(
                args.backend, model, dtype=args.dtype, max_model_len=args.max_model_len,
                tensor_parallel_size=args.tensor_parallel_size, gpu_memory_utilization=args.gpu_memory_utilization,
                seed=args.seed, enforce_eager=args.enforce_eager))
        return backend_holder[0]

    chunk_budget = [args.stop_after_chunks]
    summary = {}
    try:
        for name in names:
            bench = loaded[name]
            bdir = out / name
            generations = JsonlStore(bdir / "generations.jsonl")
            samples = JsonlStore(bdir / "samples.jsonl")
            generate_benchmark(name, bench.problems, generations, backend_factory, sampling, args.seed,
                               args.chunk_size, chunk_budget)
            grade_benchmark(name, bench.problems, generations, samples, args.n, args.grade_batch_size)
            ids = {pr.id for pr in bench.problems}
            metrics = summarize([s for s in samples.records() if s["problem_id"] in ids], args.n,
                                bench.spec.breakdown_keys)
            metrics.update(bench.extra_metrics)
            metrics["images_used"] = bool(bench.spec.multimodal and args.backend == "vllm" and is_multimodal_model(model))
            result = {"benchmark": name, "metrics": metrics,
                      "settings": {**settings, "limit": args.limit, "data_path": str(bench.path)}}
            write_json_atomic(bdir / "metrics.json", result)
            summary[name] = metrics
            print(f"{name}: pass@1={metrics['pass@1']:.4f} over {metrics['num_problems']} problems x {args.n} samples",
                  file=sys.stderr)
    finally:
        for b in backend_holder:
            b.close()
    return 0


def _old_benchmarks(out: Path) -> list[str]:
    try:
        return list(json.loads((out / "run.json").read_text()).get("benchmarks", []))
    except (OSError, json.JSONDecodeError):
        return []


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
