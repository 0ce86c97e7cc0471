"""``python -m apmpo_openrlhf.train [--config FILE] [--set key=value ...] [--dry-run]``

One command for both backends. With no ``--config`` it runs the embedded default
(configs/local/default.yaml: a tiny model learning a synthetic verifiable task on the CPU).
The config's ``backend`` key picks the local trainer or the OpenRLHF/Ray pipeline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .config import ConfigError, TrainConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "local" / "default.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m apmpo_openrlhf.train",
        description=(
            "Train an LLM with APMPO (or GRPO, DAPO, GMPO) on verifiable rewards. "
            "Every setting is a config key; docs/config.md lists every key (python -m apmpo_openrlhf.config.reference)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  python -m apmpo_openrlhf.train                       # embedded default on CPU\n"
            "  python -m apmpo_openrlhf.train --set algorithm.loss=grpo --set output_dir=outputs/grpo\n"
            "  python -m apmpo_openrlhf.train --config configs/local/openrlhf_cpu.yaml   # OpenRLHF's Ray loop, no GPU\n"
            "  ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\\n"
            "      python -m apmpo_openrlhf.train --config configs/math/qwen2.5-math-1.5b-instruct/apmpo.yaml\n"
        ),
    )
    parser.add_argument(
        "--config",
        default=None,
        help=f"YAML config file (default: {DEFAULT_CONFIG.relative_to(REPO_ROOT)}, the embedded CPU run)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted path, YAML value), repeatable: --set algorithm.adaptive.gamma=0.6",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config (and, for openrlhf, the exact OpenRLHF arguments after its own "
        "validation), then exit 0 without training",
    )
    return parser


def resolve(args: argparse.Namespace) -> TrainConfig:
    path = args.config if args.config is not None else DEFAULT_CONFIG
    return load_config(path, args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = resolve(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from . import wandb_setup

    try:
        wandb_setup.check_credentials(cfg)
    except ConfigError as e:
        if not args.dry_run:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"warning (checked again when training starts): {e}", file=sys.stderr)
    if cfg.backend == "openrlhf":
        from .openrlhf_adapter.launcher import run as run_openrlhf

        return run_openrlhf(cfg, dry_run=args.dry_run)
    if args.dry_run:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return 0
    from .local.trainer import run as run_local

    return run_local(cfg)


if __name__ == "__main__":
    sys.exit(main())
