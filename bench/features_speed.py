"""Frozen-feature extraction, baseline against current, side by side on AGIQA-3K images.

    python bench/features_speed.py --images 200 --repeats 2 \
        --baseline bench/.speed/baseline --out bench/speed.md

The baseline tree (main at 1c8263b, a `git worktree`; bench/speed.sh makes one) and the current
tree each extract the features of the same evenly spread subset of AGIQA-3K (512 x 512 JPEG,
`pooling: native_meanmax`, EfficientNet-Lite0 with the packaged weights, the Q-Bench config's
batch size 16), one after the other, each in a fresh process with its own source first on
PYTHONPATH (the baseline's run without writing bytecode into its tree). Timed: the extraction
call (decoding, preprocessing, the engine's preparation such as the ONNX export, the model);
not timed: process start and loading the model. Two settings:

* ``amp``: the workflow's default (bf16 autocast where the CPU runs bf16 natively). Here the
  current tree's ``auto`` engine runs PyTorch bf16 on a bf16 CPU (the baseline's numbers).
* ``fp32``: bf16 autocast off in both, what a CPU without native bf16 (AVX2 only) runs; the
  current ``auto`` engine then runs ONNX Runtime.

both also with ``OMP_WAIT_POLICY=PASSIVE`` in both trees (OpenMP threads sleep instead of
spinning while they wait: on a machine that other work shares, spinning threads take the cores
from the ones with work, and the baseline's serial decode-then-forward loop suffers most), and,
for information, the current tree's ``onnxruntime`` engine with ``amp`` on against the
baseline's ``amp`` run. The settings' runs alternate baseline/current ``--repeats`` times; the
rates are compared on the medians. Features are compared image by image: max |new - old| /
max |old| per image (the goal: within 1e-3, or identical). The section is written into
``--out`` between markers (bench/speed_report.py keeps it when it rewrites that file).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from speed_report import machine, replace_section

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "agiqa3k"
BACKBONE = "tf_efficientnet_lite0"
POOLING = "native_meanmax"
TOLERANCE = 1e-3
GOAL = 2.0
N_AGIQA3K = 2982
SECTION = "features_speed"
# (label, amp, current engine, OMP_WAIT_POLICY or None, the baseline run it is compared with;
# the baseline runs a setting only where that is the setting itself)
SETTINGS = (
    ("amp", True, "auto", None, "amp"),
    ("fp32", False, "auto", None, "fp32"),
    ("amp, OpenMP passive", True, "auto", "PASSIVE", "amp, OpenMP passive"),
    ("fp32, OpenMP passive", False, "auto", "PASSIVE", "fp32, OpenMP passive"),
    ("onnxruntime, amp on", True, "onnxruntime", None, "amp"),
)


def subset(count: int) -> list[str]:
    """``count`` AGIQA-3K images spread evenly over data.csv (all generators and prompts)."""
    import pandas as pd

    names = pd.read_csv(DATASET / "data.csv")["name"].tolist()
    step = max(1, len(names) // count)
    return [str(DATASET / "images" / name) for name in names[::step][:count]]


def worker(args: argparse.Namespace) -> None:
    """One timed extraction in this process (whichever ``leaf`` PYTHONPATH gives), written to
    ``--result`` (.npy features) and printed as JSON."""
    import torch

    from leaf.student import features
    from leaf.student.backbones import create_backbone

    torch.set_num_threads(args.threads)
    paths = Path(args.paths).read_text().split("\n")
    model = create_backbone(BACKBONE, "package")
    kwargs = {"batch_size": args.batch_size, "amp": args.amp, "progress": False}
    kwargs["pooling"] = POOLING
    preparation: list[float] = []
    if hasattr(features, "extract"):  # the current tree: time the engine's preparation too
        prepare = features.feature_engine

        def timed_preparation(*args, **kwargs):
            begin = time.perf_counter()
            engine = prepare(*args, **kwargs)
            preparation.append(time.perf_counter() - begin)
            return engine

        features.feature_engine = timed_preparation
    start = time.perf_counter()
    if hasattr(features, "extract"):  # the current tree: it reports the engine it used
        result = features.extract(model, paths, engine=args.engine, **kwargs)
        array, engine, precision = result.features, result.engine, result.precision
    else:  # the baseline: PyTorch, bf16 autocast where the CPU runs it natively
        array = features.embed_images(model, paths, **kwargs)
        use_bf16 = args.amp and features.bf16_autocast_supported()
        engine, precision = "torch", "bf16" if use_bf16 else "fp32"
    seconds = time.perf_counter() - start
    np.save(args.result, array)
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    outcome = {"seconds": seconds, "images": len(paths), "load": load}
    outcome["preparation"] = sum(preparation)
    print(json.dumps({**outcome, "engine": engine, "precision": precision}))


def run_tree(tree: Path, setting: tuple, paths_file: Path, result: Path, args) -> dict:
    """A worker process on ``tree``'s source with ``setting`` (of :data:`SETTINGS`); its JSON
    line."""
    _, amp, engine, wait_policy, _ = setting
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("OMP_WAIT_POLICY", None)
    if wait_policy:
        env["OMP_WAIT_POLICY"] = wait_policy
    command = [sys.executable, __file__, "worker", "--paths", str(paths_file)]
    command += ["--result", str(result), "--batch-size", str(args.batch_size)]
    command += ["--threads", str(args.threads), "--engine", engine]
    command += ["--amp"] if amp else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"worker on {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(new: np.ndarray, old: np.ndarray) -> dict:
    """Per image: max |new - old| / max |old| and the L2 relative difference; their maxima."""
    scale = np.maximum(np.abs(old).max(axis=1), 1e-12)
    max_rel = np.abs(new - old).max(axis=1) / scale
    l2 = np.linalg.norm(new - old, axis=1) / np.maximum(np.linalg.norm(old, axis=1), 1e-12)
    return {
        "identical": bool(np.array_equal(new, old)),
        "max_rel": float(max_rel.max()),
        "l2_median": float(np.median(l2)),
        "l2_max": float(l2.max()),
    }


def input_pipeline(paths: list[str], threads: int) -> tuple[float, float]:
    """Images/s of JPEG decoding alone and of decoding + the native transform (current tree)."""
    import torch

    from leaf.images import read_rgb
    from leaf.student.backbones import create_backbone
    from leaf.student.features import eval_settings, pooling_transform

    torch.set_num_threads(threads)
    transform = pooling_transform(POOLING, eval_settings(create_backbone(BACKBONE, "package")))
    transform(read_rgb(paths[0]))  # first-call set-up, not timed
    start = time.perf_counter()
    images = [read_rgb(path) for path in paths]
    decode = time.perf_counter() - start
    start = time.perf_counter()
    for image in images:
        transform(image)
    return len(paths) / decode, len(paths) / (decode + time.perf_counter() - start)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True).stdout.strip()


def projected(run: dict, images: int = N_AGIQA3K) -> float:
    """Images/s of a run scaled to ``images`` images: its one-off preparation (the ONNX export
    and check; 0 for the baseline) once, the rest at the run's rate without it."""
    steady = run["images"] / max(run["seconds"] - run["preparation"], 1e-9)
    return images / (run["preparation"] + images / steady)


def report(args, runs: dict, features: dict, pipeline: tuple[float, float], wall: float) -> str:
    """The markdown section."""
    output = os.path.relpath(args.out.resolve(), ROOT)  # the report itself does not count
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){output}")
    dirty = " + uncommitted changes" if changed else ""
    import onnxruntime
    import torch

    median = {
        key: float(np.median([r["images"] / r["seconds"] for r in value]))
        for key, value in runs.items()
    }
    best = {key: max(r["images"] / r["seconds"] for r in value) for key, value in runs.items()}
    full = {key: float(np.median([projected(r) for r in value])) for key, value in runs.items()}
    lines = [
        "## Goal 2: frozen features",
        "",
        f"Written by `python bench/features_speed.py --images {args.images} --repeats "
        f"{args.repeats} --threads {args.threads} --batch-size {args.batch_size}` (do not edit "
        "by hand; rerun it). Baseline: main at "
        f"`{git('rev-parse', '--short', 'HEAD', cwd=args.baseline)}`; current: "
        f"`{git('rev-parse', '--short', 'HEAD')}`{dirty}. Both trees extract the features of "
        f"the same {args.images} AGIQA-3K images (512 x 512 JPEG, every "
        f"{2982 // args.images}th row of data.csv), `pooling: {POOLING}`, EfficientNet-Lite0 "
        f"(packaged weights), batch {args.batch_size}, {args.threads} threads, one after the "
        "other in one run, each in a fresh process; baseline and current alternate per setting. "
        "Timed: the extraction call (decoding, preprocessing, engine preparation such as the "
        "ONNX export, the model), not process start or model loading.",
        "",
        f"- Date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}; whole run {wall / 60:.1f} min",
        f"- Machine: {machine()}",
        f"- Software: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
        f"- Input pipeline alone (current tree, {args.threads} threads): JPEG decoding "
        f"{pipeline[0]:.0f} images/s, decoding + to-tensor + normalisation "
        f"{pipeline[1]:.0f} images/s",
        "",
        "| setting | tree | engine | precision | images/s (median) | runs (images/s) | "
        "preparation s | projected images/s, all 2982 | load 1/5/15 min after each run |",
        "|---|---|---|---|---:|---|---:|---:|---|",
    ]
    for (setting, tree), value in runs.items():
        rates = ", ".join(f"{r['images'] / r['seconds']:.2f}" for r in value)
        loads = "; ".join(r["load"] for r in value)
        prep = ", ".join(f"{r['preparation']:.1f}" for r in value)
        first = value[0]
        lines.append(
            f"| {setting} | {tree} | {first['engine']} | {first['precision']} | "
            f"{median[(setting, tree)]:.2f} | {rates} | {prep} | {full[(setting, tree)]:.2f} | "
            f"{loads} |"
        )
    lines += [
        "",
        "Current against baseline: images/s ratios of the medians and of the best runs (the "
        "least disturbed) on the subset, and of the medians projected to all 2982 images (the "
        "one-off preparation counted once; the goal is judged on this one); features compared "
        "image by image against the baseline's run of the same setting.",
        "",
        "| current setting | baseline setting | ratio, median | ratio, best | ratio, 2982 images "
        "| goal: >= 2x, same features | features | max rel. difference per image "
        "| L2 rel. difference (median / max) |",
        "|---|---|---:|---:|---:|---|---|---:|---|",
    ]
    for setting, *_, base_setting in SETTINGS:
        ratio = median[(setting, "current")] / median[(base_setting, "baseline")]
        ratio_best = best[(setting, "current")] / best[(base_setting, "baseline")]
        ratio_full = full[(setting, "current")] / full[(base_setting, "baseline")]
        diff = features[setting]
        same = (
            "identical"
            if diff["identical"]
            else (
                f"within {TOLERANCE:g}"
                if diff["max_rel"] <= TOLERANCE
                else f"NOT within {TOLERANCE:g}"
            )
        )
        failed = [("speed", ratio_full < GOAL), ("features", same.startswith("NOT"))]
        reasons = [reason for reason, bad in failed if bad]
        verdict = f"not met ({', '.join(reasons)})" if reasons else "met"
        lines.append(
            f"| {setting} | {base_setting} | {ratio:.2f}x | {ratio_best:.2f}x | "
            f"{ratio_full:.2f}x | {verdict} | {same} | {diff['max_rel']:.2e} | "
            f"{diff['l2_median']:.2e} / {diff['l2_max']:.2e} |"
        )
    cores = os.cpu_count() or 0
    busy = max(float(r["load"].split(" / ")[0]) for value in runs.values() for r in value)
    lines += [
        "",
        f"The machine has {cores} cores and was shared with other work: the 1-minute load "
        f"average reached {busy:.1f} during the run, so absolute rates are low and noisy; the "
        "alternating order and the medians are meant to spread that over both trees. "
        "'OpenMP passive': both trees with OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep "
        "instead of spinning while they wait), which takes most of the load's effect away.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    work = sub.add_parser("worker")
    work.add_argument("--paths", required=True)
    work.add_argument("--result", required=True)
    work.add_argument("--batch-size", type=int, required=True)
    work.add_argument("--threads", type=int, required=True)
    work.add_argument("--engine", required=True)
    work.add_argument("--amp", action="store_true")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--baseline", type=Path, default=ROOT / "bench" / ".speed" / "baseline")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "speed.md")
    args = parser.parse_args()
    if args.command == "worker":
        worker(args)
        return
    if not (args.baseline / "src" / "leaf").is_dir():
        sys.exit(f"no baseline tree at {args.baseline}: git worktree add --detach DIR 1c8263b")
    start = time.perf_counter()
    paths = subset(args.images)
    for path in paths:  # into the page cache: the first tree to run would read from disk
        Path(path).read_bytes()
    runs: dict[tuple[str, str], list[dict]] = {}
    features: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        paths_file = Path(folder) / "paths.txt"
        paths_file.write_text("\n".join(paths))
        arrays: dict[tuple[str, str], np.ndarray] = {}
        for repeat in range(args.repeats):
            for setting_spec in SETTINGS:
                setting, base_setting = setting_spec[0], setting_spec[-1]
                trees = [("baseline", args.baseline), ("current", ROOT)]
                if base_setting != setting:
                    trees = trees[1:]  # compared with the baseline's run of its own setting
                for name, tree in trees if repeat % 2 == 0 else trees[::-1]:
                    result = Path(folder) / f"{setting}_{name}.npy"
                    outcome = run_tree(tree, setting_spec, paths_file, result, args)
                    runs.setdefault((setting, name), []).append(outcome)
                    arrays[(setting, name)] = np.load(result)
                    rate = outcome["images"] / outcome["seconds"]
                    print(f"{setting} {name}: {rate:.2f} images/s ({outcome['load']})", flush=True)
        for setting, *_, base_setting in SETTINGS:
            features[setting] = compare(
                arrays[(setting, "current")], arrays[(base_setting, "baseline")]
            )
    pipeline = input_pipeline(paths, args.threads)
    section = report(args, runs, features, pipeline, time.perf_counter() - start)
    replace_section(args.out, SECTION, section)
    print(section)


if __name__ == "__main__":
    main()
