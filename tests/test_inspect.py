"""`leaf inspect`: summaries of points and pairs caches, MOS agreement, CLI errors."""

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from leaf.cli import main
from leaf.inspect_cache import text_histogram
from leaf.teacher.cache import write_pairs_cache, write_points_cache
from leaf.teacher.levels import Levels

LEVELS = Levels(("Excellent", "Good", "Fair", "Poor", "Bad"), (5.0, 4.0, 3.0, 2.0, 1.0))


@pytest.fixture()
def dataset_dir(tmp_path):
    """``{results}/{dataset}`` with a manifest (MOS) and a points and a pairs cache."""
    rng = np.random.default_rng(0)
    ids = [f"img{i:02d}.png" for i in range(30)]
    logliks = rng.normal(size=(30, 5))
    mos = logliks @ np.array([2.0, 1.0, 0.0, -1.0, -2.0]) + rng.normal(0, 0.3, 30)
    mos[-1] = np.nan  # unknown MOS: left out
    pd.DataFrame({"image_id": ids, "path": ids, "mos": mos}).to_parquet(
        tmp_path / "manifest.parquet"
    )
    teacher_dir = tmp_path / "teacher" / "0123456789ab"
    points = write_points_cache(
        teacher_dir / "points.parquet", ids, logliks, LEVELS, {"backend": "test", "model": "toy"}
    )
    p_a = np.array([0.5, 0.6, 0.9, 0.99, 0.01, 0.3])
    write_pairs_cache(
        teacher_dir / "pairs.parquet",
        [f"p{i}" for i in range(6)],
        ids[:6],
        ids[6:12],
        np.log(np.c_[p_a, 1 - p_a]),
        {"backend": "test"},
    )
    return {"dir": tmp_path, "teacher": teacher_dir, "points": points, "mos": mos}


def test_points_report_with_the_manifest_found_by_layout(dataset_dir, capsys):
    assert main(["inspect", str(dataset_dir["teacher"] / "points.parquet")]) == 0
    out = capsys.readouterr().out
    assert "kind: points  rows: 30" in out and "  backend: test" in out and "  model: toy" in out
    points = dataset_dir["points"]
    assert f"excellent {points['p_excellent'].mean():.3f}" in out
    bars = [line for line in out.splitlines() if re.match(r"\s+\[\s*\d", line)]
    assert len(bars) == 10 and sum(int(line.split()[-1]) for line in bars) == 30
    expected = stats.spearmanr(points["score"][:29], dataset_dir["mos"][:29]).statistic
    assert f"n=29): SRCC {expected:.4f}" in out


def test_points_report_without_manifest(dataset_dir, tmp_path, capsys):
    lonely = tmp_path / "elsewhere" / "a" / "b" / "points.parquet"
    lonely.parent.mkdir(parents=True)
    lonely.write_bytes((dataset_dir["teacher"] / "points.parquet").read_bytes())
    assert main(["inspect", str(lonely)]) == 0
    assert "no manifest found" in capsys.readouterr().out


def test_pairs_report_and_tau(dataset_dir, capsys):
    pairs = str(dataset_dir["teacher"] / "pairs.parquet")
    assert main(["inspect", pairs, "--tau", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "kind: pairs  rows: 6" in out and "omega histogram:" in out
    # omega: 0, 0.029, 0.531, 0.919, 0.919, 0.119 -> 3 of 6 kept at 0.5
    assert "kept at tau=0.5: 3/6 (50.0%)" in out and "kept at tau=0.1" not in out
    assert main(["inspect", pairs]) == 0
    assert "kept at tau=0.1: 4/6" in capsys.readouterr().out


def test_point_only_pairs_report(tmp_path, capsys):
    path = tmp_path / "pairs.parquet"
    write_pairs_cache(path, [], [], [], np.empty((0, 2)), {"backend": "import", "point_only": True})
    assert main(["inspect", str(path)]) == 0
    assert "point-only teacher: no pair judgments" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "plain.parquet")
    assert main(["inspect", str(tmp_path / "plain.parquet")]) == 1
    assert "not a LEAF teacher cache" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "missing.parquet")]) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path / "plain.parquet"), "--tau", "1.5"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main([])


def test_text_histogram_bins():
    lines = text_histogram(np.array([0.0, 0.05, 0.5, 1.0, np.nan]), 0.0, 1.0, bins=4)
    assert [int(line.split()[-1]) for line in lines] == [2, 0, 1, 1]
    assert lines[0].count("#") == 40 and lines[2].count("#") == 20


def test_console_script_runs(dataset_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "leaf.cli",
            "inspect",
            str(dataset_dir["teacher"] / "pairs.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "kind: pairs" in result.stdout
