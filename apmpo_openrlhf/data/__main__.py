"""``python -m apmpo_openrlhf.data {math,sql,geometry3k,fetch} --out DIR ...``: prepare OpenRLHF
prompt datasets from the raw benchmark files, or download those files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..prompts import PROMPT_STYLES
from . import fetch as fetch_mod
from . import prepare
from .sources import GEOMETRY_SPLITS, MATH_BENCHMARKS, MATH_EVAL_BENCHMARKS, DataFormatError


def _csv_choice(allowed: tuple[str, ...] | list[str]):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in allowed]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"choose a comma-separated subset of {list(allowed)}; got {text!r}")
        return items

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m apmpo_openrlhf.data",
        description=(
            "Write OpenRLHF prompt datasets (jsonl: id, prompt = chat messages, label = JSON text, "
            "datasource[, images]) with the prompts of the paper, or download the raw benchmark files. "
            "Train with --data.input_key prompt --data.label_key label --data.apply_chat_template."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{math,sql,geometry3k,fetch}")

    def common(p: argparse.ArgumentParser, data_dir: bool = True) -> None:
        p.add_argument("--out", required=True, type=Path, help="output directory (created if missing)")
        if data_dir:
            p.add_argument("--data-dir", type=Path, default=None,
                           help="raw benchmark data directory (default: $APMPO_DATA_DIR, else ./data)")
        p.add_argument("--limit", type=_positive_int, default=None,
                       help="keep only the first N records of each output file (for smoke tests)")

    p = sub.add_parser("math", help="MATH train and the math evaluation sets",
                       description="One jsonl per benchmark: <out>/<name>.jsonl with label {task: math, answer}.")
    common(p)
    p.add_argument("--benchmarks", type=_csv_choice(list(MATH_BENCHMARKS)),
                   default=["math_train", *MATH_EVAL_BENCHMARKS],
                   help=f"comma-separated subset of {list(MATH_BENCHMARKS)} (default: all)")
    p.add_argument("--prompt-style", choices=PROMPT_STYLES, default="qwen",
                   help="qwen: instruction as system message (Qwen2.5 models); r1: no system message, "
                        "instruction appended to the problem (DeepSeek-R1-Distill). Default: qwen")
    p.add_argument("--strict", action="store_true",
                   help="fail on a record without an answer instead of skipping it with a warning "
                        "(MATH train has two such records)")

    p = sub.add_parser("sql", help="Spider dev, BIRD dev and (user-supplied) BIRD train",
                       description="Writes spider_dev.jsonl (questions whose database is present), bird_dev.jsonl "
                                   "and, with --bird-train, bird_train.jsonl; label {task: sql, gold_sql, db_id, dialect, db_root}.")
    common(p)
    p.add_argument("--bird-train", type=Path, default=None,
                   help="BIRD train questions (train.json from bird-bench.github.io); optional")
    p.add_argument("--bird-train-db-root", type=Path, default=None,
                   help="BIRD train_databases directory (<root>/<db>/<db>.sqlite); default: next to --bird-train")
    p.add_argument("--bird-dev-db-root", type=Path, default=None,
                   help="BIRD dev_databases directory; without it the BIRD dev schema comes from dev_tables.json "
                        "and grading needs APMPO_SQL_DB_ROOT")

    p = sub.add_parser("geometry3k", help="Geometry3K (InterGPS layout), images copied to <out>/images",
                       description="Writes geometry3k_<split>.jsonl with an images column; label {task: choice, answer, choices}.")
    common(p)
    p.add_argument("--root", type=Path, default=None,
                   help="Geometry3K directory holding <split>/<id>/data.json (default: <data dir>/geometry3k)")
    p.add_argument("--splits", type=_csv_choice(GEOMETRY_SPLITS), default=["train", "test"],
                   help=f"comma-separated subset of {list(GEOMETRY_SPLITS)} (default: train,test)")

    p = sub.add_parser("fetch", help="download the public raw benchmark files (needs internet)",
                       description="Downloads into the data-directory layout from pinned public GitHub commits.")
    p.add_argument("--out", required=True, type=Path, help="data directory to fill (created if missing)")
    p.add_argument("--only", type=_csv_choice(fetch_mod.GROUPS), default=list(fetch_mod.GROUPS),
                   help=f"comma-separated subset of {list(fetch_mod.GROUPS)} (default: all)")
    p.add_argument("--overwrite", action="store_true", help="download files that already exist again")
    p.add_argument("--dry-run", action="store_true", help="print the planned downloads and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    try:
        if args.command == "math":
            skipped: list[str] = []
            on_bad = None if args.strict else (lambda exc: skipped.append(str(exc)))
            report: dict = prepare.prepare_math(out, args.benchmarks, data_dir=args.data_dir,
                                                prompt_style=args.prompt_style, limit=args.limit, on_bad_record=on_bad)
            if skipped:
                report["skipped"] = skipped
        elif args.command == "sql":
            report = prepare.prepare_sql(out, data_dir=args.data_dir, bird_train=args.bird_train,
                                         bird_train_db_root=args.bird_train_db_root,
                                         bird_dev_db_root=args.bird_dev_db_root, limit=args.limit)
        elif args.command == "geometry3k":
            root = args.root
            if root is None and args.data_dir is not None:
                root = args.data_dir / "geometry3k"
            report = prepare.prepare_geometry3k(out, args.splits, root=root, limit=args.limit)
        else:
            if args.dry_run:
                for item in fetch_mod.plan(args.only):
                    print(f"{item.url} -> {out / (item.unzip_to or item.dest)}")
                return 0
            failures = fetch_mod.fetch(out, args.only, overwrite=args.overwrite)
            for line in failures:
                print(f"FAILED {line}", file=sys.stderr)
            return 1 if failures else 0
    except (FileNotFoundError, DataFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
