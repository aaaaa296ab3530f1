"""Paper figures (leaf.figures): fig. 4 (SRCC/PLCC vs MOS ratio), fig. 2 (teacher calibration)."""

from __future__ import annotations

import json
import re
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path

import docutils.core
import numpy as np
import pandas as pd
import pytest

from leaf.figures import (
    fig2_step,
    fig4_figure,
    fig4_step,
    fig4_table,
    training_curves_step,
)
from leaf.split import mos_subsets, train_test_split

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png_and_svg(png, svg) -> str:
    """Both files exist and are well-formed; returns the SVG text."""
    data = png.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert not list(png.parent.glob(".*.tmp-*"))  # no temporary file left behind
    return svg.read_text()


# ------------------------------------------------------------------------------------ fig. 4

# (seed, ratio) -> (srcc, plcc, plcc_logistic)
LEAF_VALUES = {
    (0, "0"): (0.60, 0.62, 0.65),
    (1, "0"): (0.64, 0.61, 0.66),
    (2, "0"): (0.59, 0.66, 0.70),
    (0, "0.05"): (0.70, 0.72, 0.75),
    (1, "0.05"): (0.74, 0.70, 0.76),
    (2, "0.05"): (0.69, 0.69, 0.71),
    (0, "0.1"): (0.80, 0.81, 0.83),
    (1, "0.1"): (0.78, 0.79, 0.84),
    (2, "0.1"): (0.83, 0.80, 0.82),
}
CFT_VALUES = {
    (0, "0.05"): (0.50, 0.52, 0.55),
    (1, "0.05"): (0.40, 0.45, 0.47),
    (0, "0.1"): (0.65, 0.66, 0.69),
    (1, "0.1"): (0.61, 0.60, 0.64),
}


def write_runs(folder, prefix, values, dataset="d"):
    """Metrics JSON files and run descriptions for ``values``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, runs = [], []
    for (seed, ratio), (srcc, plcc, plcc_logistic) in values.items():
        path = folder / f"{prefix}{dataset}_seed{seed}_ratio{ratio}.json"
        record = {"srcc": srcc, "plcc": plcc, "plcc_logistic": plcc_logistic, "n": 50}
        path.write_text(json.dumps(record))
        paths.append(str(path))
        runs.append({"dataset": dataset, "seed": seed, "ratio": ratio})
    return paths, runs


def fig4_inputs(tmp_path, leaf=LEAF_VALUES, cft=CFT_VALUES):
    run_metrics, runs = write_runs(tmp_path / "eval", "", leaf)
    cft_metrics, cft_runs = write_runs(tmp_path / "eval", "cft_", cft)
    return {
        "run_metrics": run_metrics,
        "cft_metrics": cft_metrics,
        "runs": runs,
        "cft_runs": cft_runs,
        "dataset": "d",
    }


def fig4_outputs(tmp_path):
    return {name: tmp_path / "fig" / f"fig4.{name}" for name in ("png", "svg", "csv")}


def expected_row(values, ratio, column):
    sample = [v[column] for (_, r), v in values.items() if r == ratio]
    std = statistics.stdev(sample) if len(sample) > 1 else 0.0
    return statistics.mean(sample), std, len(sample)


@pytest.mark.parametrize(("plcc_kind", "plcc_column"), [("raw", 1), ("logistic", 2)])
def test_fig4_writes_figures_and_the_seed_means(tmp_path, plcc_kind, plcc_column):
    out = fig4_outputs(tmp_path)
    fig4_step(**fig4_inputs(tmp_path), **out, plcc_kind=plcc_kind)

    svg_text = assert_png_and_svg(out["png"], out["svg"])
    label = {"raw": "PLCC (raw)", "logistic": "PLCC (VQEG logistic)"}[plcc_kind]
    assert label in svg_text and "SRCC" in svg_text and "MOS ratio (%)" in svg_text
    table = pd.read_csv(out["csv"])
    assert table.columns.tolist() == [
        "method",
        "ratio",
        "srcc_mean",
        "srcc_std",
        "plcc_mean",
        "plcc_std",
        "n_seeds",
        "n_srcc",
        "n_plcc",
        "plcc_kind",
    ]
    assert list(zip(table["method"], table["ratio"], strict=True)) == [
        ("LEAF", 0.0),
        ("LEAF", 0.05),
        ("LEAF", 0.1),
        ("CFT-only", 0.05),
        ("CFT-only", 0.1),
    ]
    assert set(table["plcc_kind"]) == {label.removeprefix("PLCC (").removesuffix(")")}
    for row in table.itertuples():
        values = LEAF_VALUES if row.method == "LEAF" else CFT_VALUES
        ratio = f"{row.ratio:g}"
        srcc_mean, srcc_std, n = expected_row(values, ratio, 0)
        plcc_mean, plcc_std, _ = expected_row(values, ratio, plcc_column)
        assert row.n_seeds == n
        assert (row.srcc_mean, row.srcc_std) == pytest.approx((srcc_mean, srcc_std), abs=1e-6)
        assert (row.plcc_mean, row.plcc_std) == pytest.approx((plcc_mean, plcc_std), abs=1e-6)


def test_fig4_axis_is_categorical_in_percent_and_names_the_dataset(tmp_path):
    inputs = fig4_inputs(tmp_path)
    table = fig4_table(
        inputs["run_metrics"], [], inputs["runs"], [], dataset="d", plcc_kind="logistic"
    )
    fig = fig4_figure(table, "d", "logistic")
    srcc_ax, plcc_ax = fig.axes
    assert [t.get_text() for t in srcc_ax.get_xticklabels()] == ["0", "5", "10"]
    assert srcc_ax.get_xticks().tolist() == [0, 1, 2]  # 0 % and 5 % are one step apart
    assert (srcc_ax.get_ylabel(), plcc_ax.get_ylabel()) == ("SRCC", "PLCC (VQEG logistic)")
    assert fig.get_suptitle().startswith("d:")


def test_fig4_without_cft_runs_and_with_a_single_seed(tmp_path):
    leaf = {(0, "0"): (0.5, 0.6, 0.7), (0, "0.3"): (0.8, 0.81, 0.82)}
    out = fig4_outputs(tmp_path)
    fig4_step(**fig4_inputs(tmp_path, leaf=leaf, cft={}), **out)
    table = pd.read_csv(out["csv"])
    assert table["method"].tolist() == ["LEAF", "LEAF"]
    assert table["srcc_mean"].tolist() == [0.5, 0.8]
    assert table["plcc_mean"].tolist() == [0.6, 0.81]  # raw by default
    assert table["srcc_std"].tolist() == [0.0, 0.0]
    assert table["n_seeds"].tolist() == [1, 1]


def test_fig4_null_metrics_are_left_out_of_the_mean(tmp_path):
    leaf = {(0, "0.1"): (None, 0.6, None), (1, "0.1"): (0.7, 0.8, 0.9), (2, "0.1"): (0.9, 1.0, 0)}
    out = fig4_outputs(tmp_path)
    fig4_step(**fig4_inputs(tmp_path, leaf=leaf, cft={}), **out)
    row = pd.read_csv(out["csv"]).iloc[0]
    assert row["srcc_mean"] == pytest.approx(0.8)
    assert row["srcc_std"] == pytest.approx(statistics.stdev([0.7, 0.9]), abs=1e-6)
    assert row["plcc_mean"] == pytest.approx(0.8)
    assert row["n_seeds"] == 3


def test_fig4_uses_only_the_runs_of_its_dataset(tmp_path):
    inputs = fig4_inputs(tmp_path)
    other_paths, other_runs = write_runs(
        tmp_path / "other", "", {(0, "0.1"): (-0.9, -0.9, -0.9)}, dataset="e"
    )
    inputs["run_metrics"] += other_paths
    inputs["runs"] += other_runs
    table = fig4_table(**inputs, plcc_kind="raw")
    leaf_row = table[(table["method"] == "LEAF") & (table["ratio"] == 0.1)].iloc[0]
    assert leaf_row["n_seeds"] == 3
    assert leaf_row["srcc_mean"] == pytest.approx(expected_row(LEAF_VALUES, "0.1", 0)[0])


def test_fig4_errors(tmp_path):
    inputs = fig4_inputs(tmp_path)
    bad = tmp_path / "eval" / "bad.json"
    bad.write_text(json.dumps({"srcc": 0.5, "plcc": 0.5, "n": 3}))  # no plcc_logistic
    inputs["cft_metrics"][0] = str(bad)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*plcc_logistic"):
        fig4_table(**inputs, plcc_kind="logistic")
    with pytest.raises(ValueError, match="must be one of"):
        fig4_table(**inputs, plcc_kind="spearman")
    with pytest.raises(ValueError, match="metrics files but"):
        fig4_table(**{**inputs, "runs": inputs["runs"][:-1]}, plcc_kind="raw")
    with pytest.raises(ValueError, match="no LEAF run of dataset 'x'"):
        fig4_table(**{**inputs, "dataset": "x"}, plcc_kind="raw")


# ------------------------------------------------------------------------------------ fig. 2

N_IMAGES = 100
RATIO = 0.3


def fig2_data(seed=3):
    """Manifest (MOS = 2 score + 1 + noise), split and the nested subsets of ``seed``."""
    rng = np.random.default_rng(0)
    ids = [f"img{i:03d}.png" for i in range(N_IMAGES)]
    score = rng.uniform(1.0, 5.0, N_IMAGES)
    points = pd.DataFrame({"image_id": ids, "p_good": rng.uniform(size=N_IMAGES), "score": score})
    manifest = pd.DataFrame(
        {
            "image_id": ids,
            "path": ids,
            "mos": 2.0 * score + 1.0 + rng.normal(0.0, 0.05, N_IMAGES),
        }
    )
    split = train_test_split(manifest, test_fraction=0.25, seed=0)
    train_ids = split.loc[split["split"] == "train", "image_id"].to_numpy()
    subsets = mos_subsets(train_ids, [0.1, RATIO], seed=seed, holdout_fraction=0.25)
    return {"points": points, "split": split, "manifest": manifest, "subsets": subsets}


def run_fig2(folder, data, ratio=RATIO, seed=3):
    """Write ``data`` as Parquet under ``folder``, run fig2_step, return (stats, paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    inputs = {}
    for name, frame in data.items():
        inputs[name] = str(folder / f"{name}.parquet")
        frame.to_parquet(inputs[name], index=False)
    outputs = {
        "png": folder / "fig2.png",
        "svg": folder / "fig2.svg",
        "stats": folder / "fig2.json",
        "caption": folder / "fig2.rst",
    }
    fig2_step(**inputs, **outputs, dataset="demo", seed=seed, ratio=ratio)
    return json.loads(outputs["stats"].read_text()), outputs


def ids_in_test_split(data):
    return set(data["split"].loc[data["split"]["split"] == "test", "image_id"])


@pytest.fixture(scope="module")
def fig2_result(tmp_path_factory):
    data = fig2_data()
    stats, outputs = run_fig2(tmp_path_factory.mktemp("fig2"), data)
    return data, stats, outputs


def test_fig2_recovers_the_linear_relation(fig2_result):
    data, stats, _ = fig2_result
    visible = data["subsets"][np.isclose(data["subsets"]["ratio"], RATIO)]
    assert set(visible["role"]) == {"fit", "select"}
    assert stats["n_fit"] == len(visible)
    assert stats["n_test"] == len(ids_in_test_split(data)) == 25
    assert (stats["a"], stats["b"]) == pytest.approx((2.0, 1.0), abs=0.05)
    assert stats["mean_abs_residual_after"] < 0.1 < stats["mean_abs_residual_before"]
    assert stats["rmse_after"] < 0.1
    assert stats["plcc"] == pytest.approx(stats["plcc_calibrated"], abs=1e-12)
    assert stats["srcc"] == pytest.approx(stats["srcc_calibrated"], abs=1e-12)
    test = data["manifest"].merge(data["points"], on="image_id")
    test = test[test["image_id"].isin(ids_in_test_split(data))]
    assert stats["plcc"] == pytest.approx(np.corrcoef(test["score"], test["mos"])[0, 1])
    residual = np.abs(test["mos"] - test["score"]).mean()
    assert stats["mean_abs_residual_before"] == pytest.approx(residual)
    assert (stats["dataset"], stats["seed"], stats["ratio"]) == ("demo", 3, RATIO)


def test_fig2_writes_figures_and_a_report_caption(fig2_result):
    _, stats, outputs = fig2_result
    svg_text = assert_png_and_svg(outputs["png"], outputs["svg"])
    assert "identity" in svg_text and "mean abs. residual" in svg_text  # the summary line
    caption = outputs["caption"].read_text()
    assert "{" not in caption and "}" not in caption
    for text in ("demo", "seed 3", "30 %", "n = 25", f"{stats['a']:.3f} · score", "PLCC", "SRCC"):
        assert text in caption
    assert f"{stats['mean_abs_residual_after']:.3f} after" in caption
    # valid reStructuredText: a single paragraph, no warnings (halt_level 2 raises on them)
    tree = docutils.core.publish_doctree(caption, settings_overrides={"halt_level": 2})
    assert [node.tagname for node in tree.children] == ["paragraph"]


def test_fig2_fit_uses_fit_and_select_parts(tmp_path):
    data = fig2_data()
    visible = data["subsets"][np.isclose(data["subsets"]["ratio"], RATIO)]
    select_ids = set(visible.loc[visible["role"] == "select", "image_id"])
    manifest = data["manifest"]
    manifest.loc[manifest["image_id"].isin(select_ids), "mos"] += 3.0
    stats, _ = run_fig2(tmp_path, data)

    joined = visible.merge(manifest, on="image_id").merge(data["points"], on="image_id")
    both = np.polyfit(joined["score"], joined["mos"], 1)
    fit_only = joined[joined["role"] == "fit"]
    only = np.polyfit(fit_only["score"], fit_only["mos"], 1)
    assert (stats["a"], stats["b"]) == pytest.approx(tuple(both), abs=1e-9)
    # the select images moved the line: at the mean score it is ~3 * n_select / n_visible higher
    at = joined["score"].mean()
    shift = 3.0 * len(select_ids) / len(joined)
    assert stats["a"] * at + stats["b"] - np.polyval(only, at) == pytest.approx(shift, abs=0.1)


def test_fig2_test_images_never_enter_the_fit(tmp_path, fig2_result):
    _, clean, _ = fig2_result
    data = fig2_data()
    manifest = data["manifest"]
    is_test = manifest["image_id"].isin(ids_in_test_split(data))
    manifest.loc[is_test, "mos"] = 100.0 - 30.0 * data["points"].loc[is_test, "score"]
    stats, _ = run_fig2(tmp_path, data)
    assert (stats["a"], stats["b"]) == (clean["a"], clean["b"])
    assert stats["plcc"] < 0 < clean["plcc"]  # the test data did change


def test_fig2_other_ratio_fits_the_nested_subset(tmp_path, fig2_result):
    _, larger, _ = fig2_result
    data = fig2_data()
    stats, _ = run_fig2(tmp_path, data, ratio=0.1)
    assert 0 < stats["n_fit"] < larger["n_fit"]
    assert stats["a"] != larger["a"]


def corrupt_missing_column(data):
    data["points"] = data["points"].drop(columns="score")


def corrupt_nan_score(data):
    data["points"].loc[7, "score"] = np.nan


def corrupt_no_mos_column(data):
    data["manifest"] = data["manifest"].drop(columns="mos")


def corrupt_leak(data):
    test_id = sorted(ids_in_test_split(data))[0]
    extra = pd.DataFrame({"image_id": [test_id], "ratio": [RATIO], "role": ["fit"]})
    data["subsets"] = pd.concat([data["subsets"], extra], ignore_index=True)


def corrupt_missing_visible_score(data):
    visible = data["subsets"].loc[np.isclose(data["subsets"]["ratio"], RATIO), "image_id"]
    data["points"] = data["points"][data["points"]["image_id"] != visible.iloc[-1]]


@pytest.mark.parametrize(
    ("corrupt", "ratio", "file", "message"),
    [
        (corrupt_missing_column, RATIO, "points", r"missing columns \['score'\]"),
        (corrupt_nan_score, RATIO, "points", "1 non-finite teacher scores, e.g. 'img007.png'"),
        (corrupt_no_mos_column, RATIO, "manifest", r"missing columns \['mos'\]"),
        (None, 0.5, "subsets", "no MOS-visible images at ratio 0.5"),
        (corrupt_leak, RATIO, "subsets", "are test images"),
        (corrupt_missing_visible_score, RATIO, "points", "no score for 1 visible images"),
    ],
)
def test_fig2_errors_name_the_file(tmp_path, corrupt, ratio, file, message):
    data = fig2_data()
    if corrupt is not None:
        corrupt(data)
    path = re.escape(str(tmp_path / f"{file}.parquet"))
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        run_fig2(tmp_path, data, ratio=ratio)
    assert not (tmp_path / "fig2.png").exists()


def test_fig4_accepts_plan_rows_with_float_ratios_and_extra_keys(tmp_path):
    inputs = fig4_inputs(tmp_path)
    for key in ("runs", "cft_runs"):
        inputs[key] = [
            {**run, "ratio": float(run["ratio"]), "teacher": "t", "backbone": "b", "setting": "x"}
            for run in inputs[key]
        ]
    table = fig4_table(**inputs, plcc_kind="raw")
    assert table["method"].tolist() == ["LEAF"] * 3 + ["CFT-only"] * 2
    assert table["srcc_mean"].iloc[1] == pytest.approx(expected_row(LEAF_VALUES, "0.05", 0)[0])


def test_training_curves_gather_every_runs_history(tmp_path):
    distill = pd.DataFrame({"epoch": [1, 2, 3], "loss": [0.9, 0.5, 0.4], "chosen": [0, 0, 1]})
    calibrate = pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "loss": [0.3, 0.2, 0.25],
            "select_srcc": [0.5, 0.8, 0.7],
            "chosen": [False, True, False],
        }
    )
    paths = [tmp_path / "d.csv", tmp_path / "c.csv"]
    distill.assign(stage="distill").to_csv(paths[0], index=False)
    calibrate.assign(stage="calibrate").to_csv(paths[1], index=False)
    runs = [
        {"stage": "distill", "seed": 0, "ratio": 0.0},
        {"stage": "calibrate", "seed": 0, "ratio": 0.1},
    ]
    out = {name: str(tmp_path / f"curves.{name}") for name in ("png", "svg", "csv")}
    training_curves_step(histories=[str(p) for p in paths], runs=runs, dataset="demo", **out)
    table = pd.read_csv(out["csv"])
    assert len(table) == 6 and table.loc[table["stage"] == "calibrate", "ratio"].eq(0.1).all()
    kept = table[table["chosen"].astype(bool)]
    assert kept[["stage", "epoch"]].values.tolist() == [["distill", 3], ["calibrate", 1]]
    assert Path(out["png"]).read_bytes()[:4] == b"\x89PNG"
    pd.DataFrame({"loss": [1.0]}).to_csv(paths[0], index=False)
    with pytest.raises(ValueError, match="d.csv: no 'epoch' column"):
        training_curves_step(histories=[str(p) for p in paths], runs=runs, dataset="x", **out)
