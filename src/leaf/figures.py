"""Paper figures: SRCC/PLCC against the MOS ratio (figure 4, ``tables.mos_ratio_curve``) and the
teacher's score against MOS before and after a linear calibration (figure 2,
``tables.teacher_vs_mos``).

Both step functions (rules ``fig4`` and ``fig2``) write a PNG and an SVG atomically, plus the
plotted numbers (CSV, resp. JSON and a reStructuredText caption for the Snakemake report). Figures
are drawn on the Agg canvas without pyplot, so no global backend state is touched; SVG text is kept
as text (editable, searchable).
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leaf.atomic_io import atomic_path, json_write_atomic
from leaf.experiments import percent
from leaf.metrics import finite_or_none, plcc, srcc
from leaf.tables import (
    METRIC_COLUMNS,
    aggregate_runs,
    plcc_key,
    read_run_metrics,
    test_split_scores,
)

log = logging.getLogger(__name__)

DPI = 150
#: rcParams for every figure: SVG text as <text> elements, a fixed hash salt for stable ids.
RC_PARAMS = {"svg.fonttype": "none", "svg.hashsalt": "leaf"}

LEAF, CFT = "LEAF", "CFT-only"
FIG4_COLUMNS = ["method", "ratio", *METRIC_COLUMNS]
#: method -> (marker, horizontal offset on the categorical axis, so error bars do not overlap)
FIG4_STYLES = {LEAF: ("o", -0.06), CFT: ("s", 0.06)}


def save_figure(fig: Figure, png: str | Path, svg: str | Path) -> None:
    """Write ``fig`` as PNG (``DPI``) and SVG, each atomically."""
    FigureCanvasAgg(fig)
    for path, fmt in ((png, "png"), (svg, "svg")):
        with matplotlib.rc_context(RC_PARAMS), atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else {})


# ---------------------------------------------------------------- fig. 4: SRCC/PLCC vs MOS ratio


def _run_records(
    paths: list[str], runs: list[dict], method: str, dataset: str, plcc_kind: str
) -> list[dict]:
    """One record (the run with setting=method, its metrics) per run of ``dataset``."""
    if len(paths) != len(runs):
        raise ValueError(
            f"fig4: {len(paths)} {method} metrics files but {len(runs)} run descriptions"
        )
    return [
        read_run_metrics(path, {**run, "setting": method, "ratio": float(run["ratio"])}, plcc_kind)
        for run, path in zip(runs, paths, strict=True)
        if run["dataset"] == dataset
    ]


def fig4_table(
    run_metrics: list[str],
    cft_metrics: list[str],
    runs: list[dict],
    cft_runs: list[dict],
    dataset: str,
    plcc_kind: str,
) -> pd.DataFrame:
    """Mean and sample std over seeds per method and ratio (columns ``FIG4_COLUMNS``; null
    metrics left out), from the runs of ``dataset`` (runs of other datasets are skipped)."""
    plcc_key(plcc_kind)  # an unknown kind is an error even without runs
    parts = []
    for method, paths, descriptions in ((LEAF, run_metrics, runs), (CFT, cft_metrics, cft_runs)):
        records = _run_records(paths, descriptions, method, dataset, plcc_kind)
        if records:
            parts.append(aggregate_runs(records, plcc_kind).sort_values("ratio"))
        elif method == LEAF:
            raise ValueError(f"fig4: no LEAF run of dataset {dataset!r}")
    table = pd.concat(parts, ignore_index=True).rename(columns={"setting": "method"})
    return table[FIG4_COLUMNS]


def fig4_figure(table: pd.DataFrame, dataset: str, plcc_kind: str) -> Figure:
    """Two panels (SRCC, PLCC) against the MOS ratio on a categorical axis, mean ± std."""
    ratios = sorted(table["ratio"].unique())
    position = {ratio: i for i, ratio in enumerate(ratios)}
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    panels = (("srcc", "SRCC"), ("plcc", f"PLCC ({plcc_key(plcc_kind)[1]})"))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for method, (marker, offset) in FIG4_STYLES.items():
            rows = table[table["method"] == method]
            if rows.empty:
                continue
            ax.errorbar(
                [position[ratio] + offset for ratio in rows["ratio"]],
                rows[f"{metric}_mean"],
                yerr=rows[f"{metric}_std"],
                marker=marker,
                capsize=3,
                label=method,
            )
        ax.set_xticks(range(len(ratios)), [percent(ratio) for ratio in ratios])
        ax.set_xlabel("MOS ratio (%)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    low, high = int(table["n_seeds"].min()), int(table["n_seeds"].max())
    seeds = f"{low}" if low == high else f"{low}–{high}"
    fig.suptitle(f"{dataset}: SRCC and PLCC against the MOS ratio (mean ± std over {seeds} seeds)")
    return fig


def fig4_step(
    run_metrics: list[str],
    cft_metrics: list[str],
    png: str,
    svg: str,
    csv: str,
    runs: list[dict],
    cft_runs: list[dict],
    dataset: str,
    plcc_kind: str = "raw",
) -> None:
    """Rule ``fig4``: SRCC and PLCC (``plcc_kind`` "raw" or "logistic") of LEAF and the CFT-only
    baseline against the MOS ratio; the plotted numbers go to ``csv``."""
    table = fig4_table(run_metrics, cft_metrics, runs, cft_runs, dataset, plcc_kind)
    log.info("fig4 %s:\n%s", dataset, table.to_string(index=False))
    save_figure(fig4_figure(table, dataset, plcc_kind), png, svg)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


# ------------------------------------------------ fig. 2: teacher score before/after calibration


def read_table(path: str, columns: list[str]) -> pd.DataFrame:
    """Read a Parquet file; raise a ValueError naming it when ``columns`` are missing."""
    frame = pd.read_parquet(path)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (has {list(frame.columns)})")
    return frame.assign(image_id=frame["image_id"].astype(str))


def _check_finite_scores(points: pd.DataFrame, path: str) -> None:
    bad = ~np.isfinite(points["score"].to_numpy(dtype=np.float64))
    if bad.any():
        first = points.loc[bad, "image_id"].iloc[0]
        raise ValueError(f"{path}: {int(bad.sum())} non-finite teacher scores, e.g. {first!r}")


def calibration_stats(
    score: np.ndarray, mos: np.ndarray, a: float, b: float
) -> dict[str, float | None]:
    """Agreement of the raw and the calibrated (``a * score + b``) score with MOS."""
    calibrated = a * score + b
    return {
        "plcc": finite_or_none(plcc(score, mos)),
        "plcc_calibrated": finite_or_none(plcc(calibrated, mos)),
        "srcc": finite_or_none(srcc(score, mos)),
        "srcc_calibrated": finite_or_none(srcc(calibrated, mos)),
        "mean_abs_residual_before": float(np.mean(np.abs(mos - score))),
        "mean_abs_residual_after": float(np.mean(np.abs(mos - calibrated))),
        "rmse_before": float(np.sqrt(np.mean((mos - score) ** 2))),
        "rmse_after": float(np.sqrt(np.mean((mos - calibrated) ** 2))),
    }


def fit_line(a: float, b: float) -> str:
    """The fitted line as text, e.g. 'MOS ≈ 2.000 · score + 1.000'."""
    sign = "+" if b >= 0 else "−"
    return f"MOS ≈ {a:.3f} · score {sign} {abs(b):.3f}"


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def fig2_summary(stats: dict) -> str:
    """The one-line summary under the figure."""
    return (
        f"n = {stats['n_test']} test images; {fit_line(stats['a'], stats['b'])} "
        f"(fit on {stats['n_fit']} visible); PLCC {_number(stats['plcc'])}, "
        f"SRCC {_number(stats['srcc'])}; mean abs. residual "
        f"{stats['mean_abs_residual_before']:.3f} → {stats['mean_abs_residual_after']:.3f}"
    )


def fig2_caption(stats: dict) -> str:
    """A reStructuredText paragraph for the Snakemake report (no Jinja braces, no markup)."""
    same = (
        "unchanged by the affine calibration"
        if stats["a"] > 0
        else "an affine map leaves its magnitude unchanged"
    )
    return (
        f"Teacher score against MOS on the test split of {stats['dataset']} "
        f"(seed {stats['seed']}, MOS ratio {percent(stats['ratio'])} %, "
        f"n = {stats['n_test']} test images). Left: the raw teacher score; right: the score "
        f"after the linear calibration {fit_line(stats['a'], stats['b'])}, fitted by least "
        f"squares on the {stats['n_fit']} MOS-visible train images of that ratio (fit and "
        f"select parts; no test image), with the identity line. "
        f"PLCC {_number(stats['plcc'])} (raw; {same}), SRCC {_number(stats['srcc'])}. "
        f"Mean absolute residual against MOS {stats['mean_abs_residual_before']:.3f} before "
        f"(raw score on its own scale) and {stats['mean_abs_residual_after']:.3f} after "
        f"calibration (RMSE after {stats['rmse_after']:.3f}).\n"
    )


def fig2_figure(score: np.ndarray, mos: np.ndarray, stats: dict) -> Figure:
    """Left: raw teacher score vs MOS with the fitted line; right: calibrated vs MOS with the
    identity line; the summary under both."""
    a, b = stats["a"], stats["b"]
    calibrated = a * score + b
    fig = Figure(figsize=(9.0, 4.4), layout="constrained")
    raw_ax, cal_ax = fig.subplots(1, 2)
    raw_ax.scatter(score, mos, s=10, alpha=0.6)
    line_x = np.linspace(score.min(), score.max(), 2)
    raw_ax.plot(line_x, a * line_x + b, color="C1", label=f"fit on visible: {fit_line(a, b)}")
    raw_ax.set(xlabel="teacher score (raw)", ylabel="MOS", title="before calibration")
    raw_ax.legend(fontsize="small")
    cal_ax.scatter(calibrated, mos, s=10, alpha=0.6)
    low = min(calibrated.min(), mos.min())
    high = max(calibrated.max(), mos.max())
    cal_ax.plot([low, high], [low, high], "k--", linewidth=1, label="identity")
    cal_ax.set(xlabel="calibrated score a · score + b", ylabel="MOS", title="after calibration")
    cal_ax.legend(fontsize="small")
    for ax in (raw_ax, cal_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{stats['dataset']}: teacher score vs MOS on the test split "
        f"(seed {stats['seed']}, {percent(stats['ratio'])} % MOS)"
    )
    fig.supxlabel(fig2_summary(stats), fontsize="small")
    return fig


def fig2_step(
    points: str,
    split: str,
    manifest: str,
    subsets: str,
    png: str,
    svg: str,
    stats: str,
    caption: str,
    dataset: str,
    seed: int,
    ratio: float,
) -> None:
    """Rule ``fig2``: the teacher's score against MOS on the test split, raw and after
    ``mos ≈ a · score + b`` fitted on the MOS-visible subset of ``ratio`` (fit and select
    parts) of ``seed``; numbers to ``stats`` (JSON) and ``caption`` (reStructuredText)."""
    # The student modules import torch; only this step needs them.
    from leaf.student.steps import calibration_subset
    from leaf.student.train import least_squares_affine

    ratio, seed = float(ratio), int(seed)
    points_frame = read_table(points, ["image_id", "score"])
    split_frame = read_table(split, ["image_id", "split"])
    manifest_frame = read_table(manifest, ["image_id", "mos"])
    subsets_frame = read_table(subsets, ["image_id", "ratio", "role"])
    _check_finite_scores(points_frame, points)
    if not np.isclose(subsets_frame["ratio"].to_numpy(dtype=float), ratio).any():
        present = sorted(subsets_frame["ratio"].unique().tolist())
        raise ValueError(f"{subsets}: no MOS-visible images at ratio {ratio} (has {present})")
    try:
        fit_ids, fit_mos, select_ids, select_mos = calibration_subset(manifest, subsets, ratio)
    except KeyError as error:
        raise ValueError(f"{manifest}: {error.args[0]}") from error
    visible_ids = fit_ids + select_ids
    test_ids = set(split_frame.loc[split_frame["split"] == "test", "image_id"])
    if leaked := sorted(test_ids.intersection(visible_ids)):
        raise ValueError(
            f"{subsets}: {len(leaked)} MOS-visible images of ratio {ratio} are test images "
            f"in {split}, e.g. {leaked[:3]}"
        )
    visible_score = points_frame.set_index("image_id")["score"].reindex(visible_ids)
    if visible_score.isna().any():
        missing = visible_score.index[visible_score.isna()].tolist()
        raise ValueError(
            f"{points}: no score for {len(missing)} visible images, e.g. {missing[:3]}"
        )
    a, b = least_squares_affine(visible_score.to_numpy(), np.concatenate([fit_mos, select_mos]))
    try:
        test = test_split_scores(points_frame, split_frame, manifest_frame, "score")
    except ValueError as error:
        raise ValueError(f"{points} / {manifest}: {error}") from error
    if test.empty:
        raise ValueError(f"{split}: no test images")
    score, mos = test["pred"].to_numpy(np.float64), test["mos"].to_numpy(np.float64)
    record = {
        "dataset": dataset,
        "seed": seed,
        "ratio": ratio,
        "a": a,
        "b": b,
        "n_fit": len(visible_ids),
        "n_test": len(test),
        **calibration_stats(score, mos, a, b),
    }
    log.info("fig2 %s seed %d ratio %g: %s", dataset, seed, ratio, fig2_summary(record))
    save_figure(fig2_figure(score, mos, record), png, svg)
    json_write_atomic(record, stats)
    with atomic_path(caption) as tmp:
        tmp.write_text(fig2_caption(record))


# ------------------------------------------------ training curves of the main runs


def training_table(histories: list[str], runs: list[dict]) -> pd.DataFrame:
    """Every run's per-epoch history (the CSVs the training rules write) in one table, with the
    run's stage, seed and ratio. Raises ValueError naming a history without an epoch column."""
    frames = []
    for path, run in zip(histories, runs, strict=True):
        frame = pd.read_csv(path)
        if "epoch" not in frame:
            raise ValueError(f"{path}: no 'epoch' column (has {list(frame.columns)})")
        frames.append(frame.drop(columns="stage", errors="ignore").assign(**run))
    return pd.concat(frames, ignore_index=True)


def training_figure(table: pd.DataFrame, dataset: str) -> Figure:
    """Left: stage-1 loss per epoch, one line per seed. Right: stage-2 SRCC on the held-out
    select part per epoch, one line per (seed, ratio), the kept epoch marked."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    distill = table[table["stage"] == "distill"]
    for seed, runs in distill.groupby("seed"):
        left.plot(runs["epoch"], runs["loss"], label=f"seed {seed}")
    left.set(xlabel="epoch", ylabel="loss", title=f"Stage 1 (distillation), {dataset}")
    calibrate = table[table["stage"] == "calibrate"]
    if "select_srcc" in calibrate:
        for (ratio, seed), runs in calibrate.groupby(["ratio", "seed"]):
            (line,) = right.plot(runs["epoch"], runs["select_srcc"], label=f"{ratio:.0%} s{seed}")
            if "chosen" in runs:
                chosen = runs[runs["chosen"].astype(bool)]
                right.plot(chosen["epoch"], chosen["select_srcc"], "o", color=line.get_color())
    right.set(xlabel="epoch", ylabel="SRCC on the select part", title="Stage 2 (calibration)")
    for axes in (left, right):
        if axes.lines:
            axes.legend(fontsize="x-small", ncols=2)
    return fig


def training_curves_step(
    histories: list[str], png: str, svg: str, csv: str, runs: list[dict], dataset: str
) -> None:
    """Rule ``training_curves``: the per-epoch histories of the main LEAF runs
    (:meth:`leaf.experiments.Plan.training_histories`) as one CSV and a figure."""
    table = training_table(histories, runs)
    save_figure(training_figure(table, dataset), png, svg)
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
