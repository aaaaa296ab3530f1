"""The ``leaf`` command line. Subcommands:

- ``leaf inspect <cache.parquet> [--manifest manifest.parquet] [--tau 0.5]``: summarise a teacher
  cache (see :mod:`leaf.inspect_cache`).

Add a subcommand by writing an ``_add_<name>(subparsers)`` function that registers its parser
with ``set_defaults(run=<function taking the parsed args, returning an exit code>)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _run_inspect(args: argparse.Namespace) -> int:
    from leaf.inspect_cache import inspect_cache

    print(inspect_cache(args.cache, manifest=args.manifest, tau=args.tau))
    return 0


def _tau(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"tau must lie in [0, 1], got {value}")
    return value


def _add_inspect(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise a teacher cache (points or pairs Parquet)",
        description="Rows, provenance, level probabilities, score or omega histogram, share of "
        "pairs kept at tau, and the teacher's SRCC/PLCC against MOS when a manifest is found.",
    )
    parser.add_argument("cache", help="points.parquet, pairs.parquet or pairs_kept.parquet")
    parser.add_argument(
        "--manifest",
        default=None,
        help="manifest with image_id and mos (default: ../../manifest.parquet from the cache)",
    )
    parser.add_argument(
        "--tau", type=_tau, default=None, help="confidence threshold (default: a range of values)"
    )
    parser.set_defaults(run=_run_inspect)


def build_parser() -> argparse.ArgumentParser:
    """The ``leaf`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="leaf", description="LEAF command-line tools.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_inspect(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``leaf`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError) as error:
        print(f"leaf {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
