"""Agreement of the math reward with a public grader test corpus that this project did not write.

The corpus: the test cases that ship in math-verify's source release on PyPI (``math-verify==0.9.0``,
the version requirements*.txt pin). Its ``tests/*.py`` hold (gold, prediction, expected verdict)
cases written by the math-verify authors from model outputs, plus cases they took from other
graders' suites (Qwen2.5-Math's parser, NuminaMath, OpenThoughts, a user's report). The files
are read from the tarball with ``ast`` and never executed; the release is fetched with pip
(``pip download --no-deps --no-binary :all: math-verify==0.9.0``) into a cache folder and its
sha256 checked, so the corpus is the same bytes everywhere. Nothing of it is stored in this
repository.

Each case is graded by ``rewards/openrlhf_reward.py``'s ``reward_func`` (what training calls inside
the vLLM engines; the local trainer and the evaluation harness share every step after the prompt
stripping), from threads as OpenRLHF calls it, with the label ``{"task": "math", "answer": gold}``
and the time limit ``--timeout`` (reward.timeout_s). Our fixed settings are math-verify's defaults
(float rounding 6, strict, no set-relation comparison); cases whose test asks math-verify for
another setting are reported in their own group, not hidden.

Prints the agreement overall, for the cases run under our settings, and per test function, then
every disagreement. Exit status: 0 whatever the agreement; 1 when the corpus cannot be had or
holds no case; 2 for bad arguments.

    python benchmarks/grader_agreement.py [--sdist FILE] [--cache-dir DIR] [--timeout 10] [--jsonl FILE]

``--jsonl FILE`` grades another corpus instead: one object per line with ``gold``, ``pred``,
``expected`` (0/1 or bool) and optionally ``category``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS_PACKAGE = "math-verify"
CORPUS_VERSION = "0.9.0"
CORPUS_SHA256 = "45ac6c61344ba056b9e99a660a4bc8d044ed408f730aed68c60435aa5eec4645"
DEFAULT_CACHE = Path.home() / ".cache" / "apmpo_openrlhf" / "grader_corpus"
# math-verify's defaults, which the reward uses: LaTeX and plain-expression extraction (for a boxed
# answer the box is LaTeX), float rounding 6, strict variables, no set-relation comparison
OUR_SETTINGS = {"match_types": ["latex", "expr"], "precision": 6, "strict": True, "allow_set_relation_comp": False}
_OPTION_NAMES = {"precision", "strict", "allow_set_relation_comp", "match_types"}


class CorpusError(RuntimeError):
    """The corpus could not be obtained or read."""


@dataclass
class Case:
    source: str  # "file.py::test_function"
    gold: str
    pred: str
    expected: bool
    options: dict[str, Any] = field(default_factory=dict)  # math-verify settings the test asked for

    @property
    def under_our_settings(self) -> bool:
        return all(self.options.get(k, v) == v for k, v in OUR_SETTINGS.items())


@dataclass
class Result:
    case: Case
    score: float
    logs: dict[str, float]

    @property
    def agrees(self) -> bool:
        return (self.score >= 1.0) == self.case.expected

    @property
    def outcome(self) -> str:
        for key, name in (("reward_timeout", "timeout"), ("reward_error", "error"), ("reward_no_answer", "no_answer")):
            if self.logs.get(key):
                return name
        return "correct" if self.score >= 1.0 else "wrong"


# ----------------------------------------------------------------------------- obtaining the corpus
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_sdist(cache_dir: Path, version: str = CORPUS_VERSION, timeout_s: float = 300.0) -> Path:
    """math-verify's sdist in ``cache_dir`` (downloaded with pip unless already there, hash checked)."""
    name = f"math_verify-{version}.tar.gz"
    path = cache_dir / name
    if not path.exists():
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CorpusError(f"cannot create the cache folder {cache_dir}: {exc}") from None
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               "--disable-pip-version-check", "--dest", str(cache_dir), f"{CORPUS_PACKAGE}=={version}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise CorpusError(f"pip download of {CORPUS_PACKAGE}=={version} took over {timeout_s:g} s") from None
        if proc.returncode != 0 or not path.exists():
            raise CorpusError(f"pip download of {CORPUS_PACKAGE}=={version} failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    if version == CORPUS_VERSION and sha256_of(path) != CORPUS_SHA256:
        raise CorpusError(f"{path}: sha256 {sha256_of(path)} is not the published {CORPUS_SHA256}; delete it and retry")
    return path


def corpus_sources(sdist: Path) -> dict[str, str]:
    """``tests/*.py`` of the sdist (file name -> text), read without extracting anything to disk."""
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            out = {}
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                    out[parts[2]] = tar.extractfile(member).read().decode("utf-8")
    except (OSError, tarfile.TarError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{sdist}: cannot read the test files ({exc})") from None
    if not out:
        raise CorpusError(f"{sdist}: no tests/*.py in the archive")
    return out


# ----------------------------------------------------------------------------- reading the cases
def _literal(node: ast.AST) -> Any:
    return ast.literal_eval(node)


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _grading_call_options(fn: ast.FunctionDef) -> dict[str, Any] | None:
    """The options of the test's ``compare_strings(...)`` / ``verify(parse(gold), parse(pred))`` call:
    a literal value, or ``("param", name)`` for one taken from the test's parameters."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and _call_name(node) in ("compare_strings", "verify"):
            opts: dict[str, Any] = {}
            for kw in node.keywords:
                if kw.arg in _OPTION_NAMES:
                    if isinstance(kw.value, ast.Name):
                        opts[kw.arg] = ("param", kw.value.id)
                    else:
                        try:
                            opts[kw.arg] = _literal(kw.value)
                        except ValueError:
                            opts[kw.arg] = "?"
            return opts
    return None


def _parametrized_cases(fn: ast.FunctionDef, source: str, skipped: Counter) -> list[Case]:
    opts = _grading_call_options(fn)
    if opts is None:
        return []
    cases = []
    for dec in fn.decorator_list:
        if not (isinstance(dec, ast.Call) and _call_name(dec) == "parametrize" and len(dec.args) >= 2):
            continue
        try:
            names = [n.strip() for n in _literal(dec.args[0]).split(",")]
        except (ValueError, AttributeError):
            continue
        verdict = "expected" if "expected" in names else "result" if "result" in names else None
        if not {"gold", "pred"} <= set(names) or verdict is None or not isinstance(dec.args[1], (ast.List, ast.Tuple)):
            continue
        for item in dec.args[1].elts:
            if isinstance(item, ast.Call) and _call_name(item) == "param":  # pytest.param(...)
                item = ast.Tuple(elts=item.args, ctx=ast.Load())
            try:
                values = dict(zip(names, _literal(item)))
            except ValueError:
                skipped[f"{source}: a case that is not a literal (computed in Python)"] += 1
                continue
            case_opts = {k: values[v[1]] if isinstance(v, tuple) else v for k, v in opts.items()}
            cases.append(Case(source, str(values["gold"]), str(values["pred"]), bool(values[verdict]), case_opts))
    return cases


def _inline_cases(fn: ast.FunctionDef, source: str) -> list[Case]:
    """``assert compare_strings("gold", "pred", ...) == 1`` written out in a test body."""
    cases = []
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq)):
            continue
        call = node.left
        if not (isinstance(call, ast.Call) and _call_name(call) == "compare_strings" and len(call.args) >= 2):
            continue
        try:
            gold, pred, expected = _literal(call.args[0]), _literal(call.args[1]), _literal(node.comparators[0])
            opts = {kw.arg: _literal(kw.value) for kw in call.keywords if kw.arg in _OPTION_NAMES}
        except ValueError:
            continue
        cases.append(Case(source, str(gold), str(pred), bool(expected), opts))
    return cases


def cases_from_sources(sources: dict[str, str]) -> tuple[list[Case], Counter]:
    """Every (gold, pred, expected) case of the test files, and what was skipped and why."""
    cases: list[Case] = []
    skipped: Counter = Counter()
    for name in sorted(sources):
        tree = ast.parse(sources[name], filename=name)
        for fn in tree.body:
            if isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_"):
                source = f"{name}::{fn.name}"
                found = _parametrized_cases(fn, source, skipped) + _inline_cases(fn, source)
                cases.extend(found)
    return cases, skipped


def cases_from_jsonl(path: Path) -> list[Case]:
    cases = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                cases.append(Case(str(rec.get("category", path.name)), str(rec["gold"]), str(rec["pred"]),
                                  bool(rec["expected"])))
            except (json.JSONDecodeError, KeyError) as exc:
                raise CorpusError(f"{path}:{lineno}: needs JSON with gold, pred, expected ({exc})") from None
    return cases


# ----------------------------------------------------------------------------- grading
def grade_cases(cases: list[Case], timeout_s: float, threads: int = 16) -> list[Result]:
    """Each case through reward_func (one sample per call, from ``threads`` threads, like OpenRLHF)."""
    from apmpo_openrlhf.rewards.openrlhf_reward import reward_func
    from apmpo_openrlhf.rewards.registry import TIMEOUT_ENV

    def one(case: Case) -> Result:
        label = json.dumps({"task": "math", "answer": case.gold})
        out = reward_func([case.pred], [""], [label])
        return Result(case, float(out["rewards"]), dict(out["extra_logs"]))

    before = os.environ.get(TIMEOUT_ENV)
    os.environ[TIMEOUT_ENV] = str(timeout_s)  # what the launcher sets from reward.timeout_s
    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, cases))
    finally:
        if before is None:
            os.environ.pop(TIMEOUT_ENV, None)
        else:
            os.environ[TIMEOUT_ENV] = before


def agreement(results: Iterable[Result]) -> tuple[int, int]:
    results = list(results)
    return sum(r.agrees for r in results), len(results)


def _pct(agree: int, total: int) -> str:
    return f"{agree}/{total} = {100.0 * agree / total:.1f}%" if total else "0/0"


def report(results: list[Result], skipped: Counter, show: int) -> None:
    ours = [r for r in results if r.case.under_our_settings]
    other = [r for r in results if not r.case.under_our_settings]
    print(f"agreement, all cases:                   {_pct(*agreement(results))}")
    print(f"agreement, cases under our settings:    {_pct(*agreement(ours))}")
    if other:
        print(f"agreement, cases asking other settings: {_pct(*agreement(other))} "
              "(LaTeX-only or expression-only extraction, rounding, non-strict or set-relation options)")
    for why, n in sorted(skipped.items()):
        print(f"skipped: {n} x {why}")
    print("\nper test function (our settings / other settings):")
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        groups[r.case.source].append(r)
    for source, rs in sorted(groups.items()):
        a = agreement(r for r in rs if r.case.under_our_settings)
        b = agreement(r for r in rs if not r.case.under_our_settings)
        extra = f"   other settings {_pct(*b)}" if b[1] else ""
        print(f"  {source:<58} {_pct(*a):>16}{extra}")
    wrong = [r for r in results if not r.agrees]
    kinds = Counter(f"expected {'1' if r.case.expected else '0'}, reward {r.outcome}" for r in wrong)
    print("\ndisagreements by kind: " + (", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) or "none"))
    for r in wrong[:show]:
        opts = f" {r.case.options}" if not r.case.under_our_settings else ""
        print(f"- {r.case.source}{opts}: expected {int(r.case.expected)}, reward {r.score:g} ({r.outcome})\n"
              f"    gold: {_short(r.case.gold)}\n    pred: {_short(r.case.pred)}")
    if len(wrong) > show:
        print(f"... {len(wrong) - show} more (--show N)")


def _short(text: str, limit: int = 160) -> str:
    text = text.replace("\n", "\\n").replace("\t", "\\t")  # visible: they matter to the extraction
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdist", type=Path, help="a local math_verify-<version>.tar.gz instead of downloading it")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                    help=f"where pip puts the downloaded sdist (default {DEFAULT_CACHE})")
    ap.add_argument("--version", default=CORPUS_VERSION,
                    help=f"math-verify release whose tests are the corpus (default {CORPUS_VERSION}; only it is "
                    "hash-checked)")
    ap.add_argument("--jsonl", type=Path, help="grade this JSONL corpus instead (gold, pred, expected[, category])")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-answer time limit, as reward.timeout_s (default 10)")
    ap.add_argument("--show", type=int, default=200, help="disagreements to list (default 200)")
    args = ap.parse_args(argv)
    if not args.timeout > 0:
        ap.error("--timeout must be > 0")
    try:
        if args.jsonl is not None:
            cases, skipped, corpus = cases_from_jsonl(args.jsonl), Counter(), str(args.jsonl)
        else:
            sdist = args.sdist or download_sdist(args.cache_dir, args.version)
            cases, skipped = cases_from_sources(corpus_sources(sdist))
            corpus = f"{sdist.name} (sha256 {sha256_of(sdist)[:16]}...)"
        if not cases:
            raise CorpusError("the corpus holds no (gold, pred, expected) case")
    except (CorpusError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from importlib.metadata import version

    print(f"corpus: {corpus}: {len(cases)} cases; grader: reward_func with math-verify "
          f"{version('math-verify')}, time limit {args.timeout:g} s")
    start = time.perf_counter()
    results = grade_cases(cases, args.timeout)
    print(f"graded in {time.perf_counter() - start:.1f} s\n")
    report(results, skipped, args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
