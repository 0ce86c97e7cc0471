"""``python -m evaluation.diversity RUN_DIR ...``: output diversity of the paper's Table 4.

Over the samples of each prompt (from a run's ``<benchmark>/samples.jsonl``), averaged over prompts:

- Self-BLEU: BLEU-4 (sacrebleu ``sentence_bleu``, 13a tokenizer, exp smoothing) of each sample
  against the other samples of its prompt as references, averaged; on a 0-1 scale. Lower = more diverse.
- ACS: average pairwise cosine similarity of sentence embeddings (sentence-transformers, a local
  model folder; the paper used Qwen3-Embedding-4B). Lower = more diverse.
- GPT-Diversity (optional): an LLM judge behind an OpenAI-compatible endpoint scores the correct
  solutions of each prompt 0-3 with the paper's prompt (Appendix K.6); prompts with fewer than two
  correct solutions are not judged. Higher = more diverse.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from ._cli import HelpFormatter
from .report import ReportError, find_runs, load_run, method_title
from .store import JsonlStore, write_json_atomic

JUDGE_PROMPT = (
    "Given the following set of correct solutions to a math problem, evaluate the diversity of the reasoning "
    "methods used. Assign a single integer score from 0 to 3 based on the following criteria:\n"
    "- 0: Solutions use identical logic and phrasing (High Repetition).\n"
    "- 1: Solutions use the same underlying logic but different phrasing.\n"
    "- 2: Solutions use slightly different logical steps or intermediate derivations.\n"
    "- 3: Solutions employ fundamentally different mathematical approaches (e.g., Coordinate Geometry vs. "
    "Synthetic Geometry, or Induction vs. Direct Proof).\n"
    "Output only the single numerical score."
)
_SCORE_RE = re.compile(r"\b([0-3])\b")


def self_bleu(texts: list[str]) -> float:
    """Mean BLEU-4 (0-1) of each text against the others; needs at least two texts."""
    import sacrebleu

    if len(texts) < 2:
        raise ValueError("self_bleu needs at least two texts")
    scores = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1 :]).score / 100.0 for i, t in enumerate(texts)]
    return statistics.fmean(scores)


def average_cosine_similarity(embeddings) -> float:
    """Mean cosine similarity over all pairs i < j of the rows of ``embeddings``."""
    import numpy as np

    e = np.asarray(embeddings, dtype=np.float64)
    if e.shape[0] < 2:
        raise ValueError("average_cosine_similarity needs at least two embeddings")
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    e = e / np.where(norms == 0, 1.0, norms)
    sim = e @ e.T
    iu = np.triu_indices(e.shape[0], k=1)
    return float(sim[iu].mean())


def group_samples(samples_path: Path) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in JsonlStore(samples_path).records():
        groups[str(rec["problem_id"])].append(rec)
    for g in groups.values():
        g.sort(key=lambda r: r["sample_index"])
    return dict(groups)


def judge_message(problem_prompt: str, solutions: list[str]) -> str:
    blocks = "\n\n".join(f"Solution {i + 1}:\n{s}" for i, s in enumerate(solutions))
    return f"{JUDGE_PROMPT}\n\nProblem (as given to the model):\n{problem_prompt}\n\n{blocks}"


class Judge:
    """An LLM judge behind an OpenAI-compatible chat completions endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float = 120.0, max_retries: int = 2):
        from openai import OpenAI

        self.client = OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout, max_retries=max_retries)
        self.model = model

    def score(self, problem_prompt: str, solutions: list[str]) -> int | None:
        """0-3, or None when the reply holds no score."""
        reply = self.client.chat.completions.create(
            model=self.model, temperature=0.0, max_tokens=16,
            messages=[{"role": "user", "content": judge_message(problem_prompt, solutions)}],
        )
        text = reply.choices[0].message.content or ""
        m = _SCORE_RE.search(text)
        return int(m.group(1)) if m else None


def run_diversity(samples_path: Path, embedder=None, judge: Judge | None = None, max_problems: int | None = None) -> dict:
    groups = group_samples(samples_path)
    pids = sorted(groups)[:max_problems]
    usable = [p for p in pids if len(groups[p]) >= 2]
    if not usable:
        raise ValueError(f"{samples_path}: no problem has two or more samples")
    result: dict = {"problems": len(usable)}
    bleu = [self_bleu([r["response"] for r in groups[p]]) for p in tqdm(usable, desc="self-BLEU", unit="problem")]
    result["self_bleu"] = statistics.fmean(bleu)
    if embedder is not None:
        acs = []
        for p in tqdm(usable, desc="embeddings (ACS)", unit="problem"):
            acs.append(average_cosine_similarity(embedder.encode([r["response"] for r in groups[p]])))
        result["acs"] = statistics.fmean(acs)
    if judge is not None:
        scores, unparsed, skipped = [], 0, 0
        for p in tqdm(usable, desc="LLM judge", unit="problem"):
            correct = [r["response"] for r in groups[p] if r.get("correct")]
            if len(correct) < 2:
                skipped += 1
                continue
            s = judge.score(groups[p][0]["prompt"], correct)
            if s is None:
                unparsed += 1
            else:
                scores.append(s)
        result["gpt_diversity"] = statistics.fmean(scores) if scores else None
        result["judge"] = {"model": judge.model, "judged": len(scores), "unparsed_replies": unparsed,
                           "fewer_than_two_correct": skipped}
    return result


def load_embedder(path: str):
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"--embedding-model {path}: folder not found (a local sentence-transformers model)")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(p), device="cpu" if not _cuda() else None, local_files_only=True)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f}±{statistics.stdev(values):.2f}"


def render_md(rows: list[dict], benchmark: str) -> str:
    lines = [f"### Table 4: diversity on {benchmark} (ACS ↓, Self-BLEU ↓, GPT-Diversity ↑)\n",
             "| Model | Method | Runs | ACS | Self-BLEU | GPT-Diversity |", "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"]), []).append(r)
    for (model, method), members in groups.items():
        cols = [_fmt([m[k] for m in members if m.get(k) is not None]) for k in ("acs", "self_bleu", "gpt_diversity")]
        lines.append(f"| {model} | {method_title(method)} | {len(members)} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.diversity",
        description="Diversity of the samples of each prompt (paper Table 4): Self-BLEU, average cosine similarity "
        "of sentence embeddings (ACS) and, optionally, an LLM-judged diversity score. Reads the samples.jsonl "
        "files written by python -m evaluation.run; writes <run>/<benchmark>/diversity.json.",
        formatter_class=HelpFormatter)
    parser.add_argument("runs", nargs="+", help="evaluation.run --out folders (or folders holding several)")
    parser.add_argument("--benchmark", default="math500", help="benchmark whose samples are measured")
    parser.add_argument("--embedding-model", default=None,
                        help="local sentence-transformers model folder for ACS (e.g. Qwen3-Embedding-4B); "
                        "omitted: no ACS")
    parser.add_argument("--judge-base-url", default=None,
                        help="OpenAI-compatible endpoint for the LLM judge, e.g. http://127.0.0.1:8000/v1; omitted: "
                        "no GPT-Diversity")
    parser.add_argument("--judge-model", default="gpt-5", help="model name sent to the judge endpoint")
    parser.add_argument("--judge-api-key-env", default="OPENAI_API_KEY",
                        help="environment variable holding the judge's API key (may be unset for local servers)")
    parser.add_argument("--max-problems", type=int, default=None, help="measure only the first K problems (by id)")
    parser.add_argument("--format", choices=("md", "json"), default="md", help="output format")
    args = parser.parse_args(argv)
    if args.max_problems is not None and args.max_problems < 1:
        print(f"error: --max-problems must be >= 1, got {args.max_problems}", file=sys.stderr)
        return 2
    try:
        runs = [load_run(p) for p in find_runs(args.runs)]
        embedder = load_embedder(args.embedding_model) if args.embedding_model else None
    except (ReportError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    judge = None
    if args.judge_base_url:
        judge = Judge(args.judge_base_url, args.judge_model, os.environ.get(args.judge_api_key_env))
    rows = []
    for run in runs:
        path = run.path / args.benchmark / "samples.jsonl"
        if not path.is_file():
            print(f"error: {path} not found: run python -m evaluation.run with --benchmarks {args.benchmark} first",
                  file=sys.stderr)
            return 2
        result = run_diversity(path, embedder, judge, args.max_problems)
        result.update({"benchmark": args.benchmark, "embedding_model": args.embedding_model})
        write_json_atomic(run.path / args.benchmark / "diversity.json", result)
        rows.append({"model": run.model, "method": run.method, "train_seed": run.train_seed,
                     "run_name": run.run_name, **result})
    if args.format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write(render_md(rows, args.benchmark))
    return 0


if __name__ == "__main__":
    sys.exit(main())
