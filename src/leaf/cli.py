"""The ``leaf`` command line. Subcommands:

- ``leaf inspect <cache.parquet> [--manifest manifest.parquet] [--tau 0.5]``: summarise a teacher
  cache (see :mod:`leaf.inspect_cache`).
- ``leaf predict --model <artifact.leaf.pt | model folder> <folder | paths.csv | glob> -o
  scores.parquet``: score new images with a deployed student (see :mod:`leaf.predict`).
- ``leaf export --model <artifact.leaf.pt> DIR``: TorchScript and ONNX exports, checked against
  PyTorch (see :mod:`leaf.export`); ``--format hf``: a model folder with model.safetensors,
  config.json and a README.md model card (see :mod:`leaf.model_card`).

Add a subcommand by writing an ``_add_<name>(subparsers)`` function that registers its parser
with ``set_defaults(run=<function taking the parsed args, returning an exit code>)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from leaf import __version__


def _run_inspect(args: argparse.Namespace) -> int:
    from leaf.optional import missing_extra

    try:
        from leaf.inspect_cache import inspect_cache
    except ImportError as error:  # pandas and pyarrow: the workflow's
        raise missing_extra("leaf inspect", "workflow", error) from error

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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _run_predict(args: argparse.Namespace) -> int:
    from leaf.predict import run_predict

    return run_predict(
        args.model,
        args.source,
        args.output,
        batch_size=args.batch_size,
        bf16=args.bf16,
        onnx=args.onnx,
        threads=args.threads,
        progress=not args.no_progress,
    )


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="score images with a deployed student artifact (*.leaf.pt)",
        description="One row per image (path, score on the model's calibrated MOS scale, and the "
        "model's provenance: dataset, teacher_hash, teacher_backend, ratio, seed, config_hash). "
        "Images are streamed in batches; unreadable files are skipped, summarised on stderr and "
        "listed in <output>.errors.csv.",
    )
    parser.add_argument(
        "--model", required=True, help="student artifact (*.leaf.pt) or its model folder"
    )
    parser.add_argument(
        "source", help="a folder (searched recursively), a CSV of paths (column 'path') or a glob"
    )
    parser.add_argument(
        "-o", "--output", required=True, help="scores.parquet, or a .csv name for CSV output"
    )
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch")
    parser.add_argument(
        "--bf16", action="store_true", help="bf16 autocast on CPU (PyTorch only; faster, ~1e-2)"
    )
    parser.add_argument(
        "--onnx",
        default=None,
        metavar="MODEL.onnx",
        help="run this ONNX export of --model (from `leaf export`) with ONNX Runtime",
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=None, help="CPU threads (default: torch's)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run_predict)


def _run_export(args: argparse.Namespace) -> int:
    out_dir = args.out_dir or args.out_dir_arg
    if not out_dir or (args.out_dir and args.out_dir_arg and args.out_dir != args.out_dir_arg):
        raise ValueError("give one output folder (OUT_DIR or --out-dir)")
    if args.format == "hf":
        from leaf.model_card import run_model_folder_export

        return run_model_folder_export(args.model, out_dir, args.metrics, args.license)
    from leaf.export import run_export

    return run_export(
        args.model, out_dir, images=args.images, tolerance=args.tolerance, threads=args.threads
    )


def _add_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a student to TorchScript and ONNX, or as a model folder (--format hf)",
        description="--format onnx (default): writes <name>.torchscript.pt, <name>.onnx and "
        "<name>.export.json, reloads both exports (ONNX Runtime on CPU) and fails (exit code 2) "
        "unless they give PyTorch's scores within --tolerance; both take RGB in [0, 1]. "
        "--format hf: writes model.safetensors, config.json and a README.md model card (test "
        "SRCC/PLCC from --metrics or the run's evaluation file next to the artifact, licences, "
        "intended use), reloads the folder and fails unless it scores as the artifact.",
    )
    parser.add_argument("--model", required=True, help="student artifact (*.leaf.pt)")
    parser.add_argument("out_dir_arg", nargs="?", metavar="OUT_DIR", help="output folder")
    parser.add_argument("--out-dir", default=None, help="output folder (same as OUT_DIR)")
    parser.add_argument(
        "--format",
        choices=("onnx", "hf"),
        default="onnx",
        help="onnx: TorchScript + ONNX files; hf: a Hugging Face-style model folder",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        metavar="EVAL.json",
        help="hf: the run's test metrics (rule evaluate's JSON; default: found next to the "
        "artifact in its results folder, else the card says 'not available')",
    )
    parser.add_argument(
        "--license",
        default="other",
        help="hf: licence id of the exported weights for the card (default: other)",
    )
    parser.add_argument(
        "--images",
        default=None,
        help="images to check on (folder, CSV or glob; default: synthetic images)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest allowed |score difference| (relative above 1)",
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=None, help="CPU threads (default: torch's)"
    )
    parser.set_defaults(run=_run_export)


def build_parser() -> argparse.ArgumentParser:
    """The ``leaf`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(prog="leaf", description="LEAF command-line tools.")
    parser.add_argument("--version", action="version", version=f"leaf {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_inspect(subparsers)
    _add_predict(subparsers)
    _add_export(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``leaf`` console script; returns the exit code."""
    # Idle OpenMP threads sleep instead of spinning (set before torch loads; the user's wins).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError, ImportError) as error:
        print(f"leaf {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
