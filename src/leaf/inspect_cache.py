"""Human-readable summary of a teacher cache (the ``leaf inspect`` command).

Points caches: rows, provenance, mean level probabilities, a histogram of the score and, when a
manifest with MOS is available, the teacher's SRCC/PLCC against MOS. Pairs caches: rows,
provenance, mean p_A, share of t_ab = 1, a histogram of omega and the share of pairs kept at tau.
The manifest defaults to the dataset's manifest in the cache's results folder
(:func:`default_manifest`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from leaf.metrics import plcc, srcc
from leaf.teacher.cache import PAIRS_KIND, POINTS_KIND, filter_pairs, read_cache

HISTOGRAM_BINS = 10
BAR_WIDTH = 40
DEFAULT_TAUS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)


def text_histogram(
    values: np.ndarray, low: float, high: float, bins: int = HISTOGRAM_BINS
) -> list[str]:
    """Lines ``[a, b)  ####  count`` of a fixed-range histogram (the last bin includes ``high``)."""
    values = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(values[np.isfinite(values)], bins=bins, range=(low, high))
    peak = max(int(counts.max()), 1) if len(counts) else 1
    lines = []
    for count, start, stop in zip(counts, edges[:-1], edges[1:], strict=True):
        bar = "#" * int(round(BAR_WIDTH * count / peak))
        lines.append(f"  [{start:7.3f}, {stop:7.3f})  {bar:<{BAR_WIDTH}}  {count}")
    return lines


def default_manifest(cache_path: str | Path) -> Path:
    """``{results}/{dataset}/manifest.parquet`` for a cache in ``{dataset}/teacher/{hash}/``."""
    return Path(cache_path).resolve().parent.parent.parent / "manifest.parquet"


def _format_provenance(metadata: dict) -> list[str]:
    lines = ["provenance:"]
    for key in sorted(metadata):
        value = metadata[key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        lines.append(f"  {key}: {text}")
    return lines


def _level_words(frame: pd.DataFrame) -> list[str]:
    return [column[len("p_") :] for column in frame.columns if column.startswith("p_")]


def _points_summary(frame: pd.DataFrame, metadata: dict, manifest: Path | None) -> list[str]:
    words = _level_words(frame)
    means = "  ".join(f"{word} {frame[f'p_{word}'].mean():.3f}" for word in words)
    lines = [f"mean level probabilities: {means}"]
    values = metadata.get("levels", {}).get("values")
    low, high = (min(values), max(values)) if values else (frame.score.min(), frame.score.max())
    lines.append(
        f"score: mean {frame.score.mean():.3f}  std {frame.score.std():.3f}  "
        f"level values [{low:g}, {high:g}]"
    )
    lines += text_histogram(frame["score"].to_numpy(), low, high)
    lines += _mos_agreement(frame, manifest)
    return lines


def _mos_agreement(frame: pd.DataFrame, manifest: Path | None) -> list[str]:
    if manifest is None or not manifest.exists():
        return ["MOS: no manifest found (pass --manifest)"]
    labels = pd.read_parquet(manifest)
    if "mos" not in labels.columns:
        return [f"MOS: {manifest} has no mos column"]
    joined = frame.merge(labels[["image_id", "mos"]], on="image_id", how="inner")
    joined = joined[np.isfinite(joined["mos"].to_numpy(dtype=np.float64))]
    if len(joined) < 2:
        return [f"MOS: fewer than two cached images have a MOS in {manifest}"]
    score, mos = joined["score"].to_numpy(), joined["mos"].to_numpy(dtype=np.float64)
    return [
        f"teacher vs MOS ({manifest}, n={len(joined)}): SRCC {srcc(score, mos):.4f}  "
        f"PLCC {plcc(score, mos):.4f}"
    ]


def _pairs_summary(frame: pd.DataFrame, metadata: dict, tau: float | None) -> list[str]:
    if frame.empty:
        if metadata.get("point_only"):
            return ["point-only teacher: no pair judgments (the student trains point-only)"]
        return ["no pairs"]
    lines = [
        f"mean p_A {frame['p_A'].mean():.3f}  share t_ab = 1: {frame['t_ab'].mean():.3f}  "
        f"mean omega {frame['omega'].mean():.3f}",
        "omega histogram:",
        *text_histogram(frame["omega"].to_numpy(), 0.0, 1.0),
    ]
    for threshold in DEFAULT_TAUS if tau is None else (tau,):
        kept = len(filter_pairs(frame, threshold))
        lines.append(f"kept at tau={threshold:g}: {kept}/{len(frame)} ({kept / len(frame):.1%})")
    return lines


def inspect_cache(
    path: str | Path, manifest: str | Path | None = None, tau: float | None = None
) -> str:
    """The text report of a teacher cache (see the module docstring)."""
    frame, metadata = read_cache(path)
    kind = metadata.get("kind")
    lines = [f"file: {path}", f"kind: {kind}  rows: {len(frame)}", *_format_provenance(metadata)]
    if kind == POINTS_KIND:
        manifest_path = Path(manifest) if manifest is not None else default_manifest(path)
        lines += _points_summary(frame, metadata, manifest_path)
    elif kind == PAIRS_KIND:
        lines += _pairs_summary(frame, metadata, tau)
    else:
        raise ValueError(f"{path}: unknown cache kind {kind!r}")
    return "\n".join(lines)
