"""The ready-to-run configs: config/paper/*.yaml (GPU protocol) and config/agiqa3k_qbench*.yaml
(real MLLM judgments on CPU) against tiny datasets in each benchmark's real file format.

Each paper config runs its real ``prepare`` and ``split`` jobs on the tiny dataset (label file
copied from tests/fixtures/<dataset>/, images generated here), then must plan the whole table1
DAG in a dry run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from workflow_helpers import ROOT, planned_jobs, snakemake

from leaf.datasets import load_labels
from leaf.teacher.factory import teacher_hash

FIXTURES = ROOT / "tests" / "fixtures"
PAPER = ROOT / "config" / "paper"
QBENCH = ROOT / "config" / "agiqa3k_qbench.yaml"
OTHER_TEACHERS = sorted((ROOT / "config").glob("agiqa3k_qbench_*.yaml"))
# dataset -> label file of tests/fixtures/ in the dataset's real format (relative to its root)
LABEL_FILES = {
    "agiqa3k": "agiqa3k/data.csv",
    "aigiqa20k": "aigiqa20k/info_train.csv",
    "koniq10k": "koniq10k/koniq10k_distributions_sets.csv",
    "spaq": "spaq/MOS and Image attribute scores.csv",
}
N_SEEDS, N_RATIOS = 5, 3


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def tiny_dataset(adapter: str, root: Path) -> pd.DataFrame:
    """The fixture label file at its real place under ``root`` plus one small image for every
    row, at the path the adapter resolves it to. Returns the adapter's label table."""
    label_file = root / Path(LABEL_FILES[adapter]).name
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / LABEL_FILES[adapter], label_file)
    labels = load_labels(adapter, root)
    rng = np.random.default_rng(0)
    for path in labels["path"]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
    return labels


def write_override(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def baseline_snakefile(workdir: Path) -> list[str]:
    """Extra CLI args that make workflow/rules/baselines.smk available: none once the main
    Snakefile includes it, else ``-s`` a wrapper that includes both."""
    if "baselines.smk" in (ROOT / "Snakefile").read_text():
        return []
    wrapper = workdir / "Snakefile.baselines"
    wrapper.write_text(
        f'include: "{ROOT / "Snakefile"}"\ninclude: "{ROOT / "workflow/rules/baselines.smk"}"\n'
    )
    return ["-s", str(wrapper)]


@pytest.mark.parametrize("dataset", sorted(LABEL_FILES))
def test_paper_config_prepares_splits_and_plans_table1(dataset, tmp_path):
    config_file = PAPER / f"{dataset}.yaml"
    config = load_yaml(config_file)
    assert config["teacher"]["backend"] == "vllm"
    assert config["teacher"]["vllm"]["preset"] == "internvl3_5_8b"
    assert (config["student"]["backbone"], config["student"]["weights"]) == (
        "convnext_base",
        "timm",
    )
    assert len(config["seeds"]) == N_SEEDS and config["calibration"]["ratios"] == [0, 0.1, 0.3]
    assert config["datasets"][dataset]["root"] == f"data/{dataset}"  # documented placeholder

    labels = tiny_dataset(dataset, tmp_path / "data" / dataset)
    override = write_override(
        tmp_path / "override.yaml",
        {"datasets": {dataset: {"root": str(tmp_path / "data" / dataset)}}},
    )
    results = config["results_dir"]
    configfiles = [config_file, override]
    snakemake(tmp_path, f"{results}/{dataset}/split.parquet", configfiles=configfiles)
    split = pd.read_parquet(tmp_path / results / dataset / "split.parquet")
    assert sorted(split["image_id"]) == sorted(labels["image_id"])
    if dataset == "koniq10k":  # the official split: exactly the rows whose set is "test"
        official = labels.loc[labels["set"] == "test", "image_id"]
        assert sorted(split.loc[split["split"] == "test", "image_id"]) == sorted(official)

    shards = config["teacher"]["shards"]
    jobs = planned_jobs(tmp_path, f"{results}/table1.csv", configfiles=configfiles)
    assert jobs == {
        "pairs": 1,
        "subsets": N_SEEDS,
        "teacher_point": shards,
        "teacher_pair": shards,
        "merge_points": 1,
        "merge_pairs": 1,
        "filter_pairs": 1,
        "teacher_zero_shot": 1,
        "features": 1,
        "distill": N_SEEDS,
        "calibrate": N_SEEDS * (N_RATIOS - 1),
        "evaluate": N_SEEDS * N_RATIOS,
        "table1": 1,
    }


def qbench_override(tmp_path: Path) -> Path:
    """The AGIQA-3K fixture dataset and a Q-Bench fixture file in place of the shared data."""
    root = tmp_path / "agiqa3k"
    tiny_dataset("agiqa3k", root)
    settings = {
        "datasets": {"agiqa3k": {"root": str(root)}},
        "teacher": {"import": {"path": str(FIXTURES / "qbench" / "three_levels.json")}},
    }
    return write_override(tmp_path / "override.yaml", settings)


def test_agiqa3k_qbench_config_is_point_only_and_native(tmp_path):
    config = load_yaml(QBENCH)
    assert config["results_dir"] == "results/agiqa3k_qbench"
    assert config["split"]["group_by"] == "prompt"
    assert config["teacher"]["import"]["path"] == (
        "../shared/teachers/qbench-agiqa3k/mplug_owl.json"
    )
    assert config["student"]["pooling"] == "native_meanmax"
    configfiles = [QBENCH, qbench_override(tmp_path)]
    target = "results/agiqa3k_qbench/table1.csv"
    jobs = planned_jobs(tmp_path, target, configfiles=configfiles)
    assert jobs["distill"] == N_SEEDS and jobs["evaluate"] == N_SEEDS * N_RATIOS
    assert jobs["teacher_point"] == 1 and jobs["features"] == 1

    cft = planned_jobs(
        tmp_path,
        "results/agiqa3k_qbench/table_cft.csv",
        *baseline_snakefile(tmp_path),
        configfiles=configfiles,
    )
    assert "distill" not in cft and "teacher_point" not in cft  # stage 2 alone
    assert cft["calibrate_cft"] == cft["evaluate_cft"] == N_SEEDS * (N_RATIOS - 1)
    assert cft["table_cft"] == 1


@pytest.mark.parametrize("overlay", OTHER_TEACHERS, ids=lambda path: path.stem)
def test_other_teacher_overlays_change_only_the_teacher(overlay, tmp_path):
    base, extra = load_yaml(QBENCH), load_yaml(overlay)
    assert set(extra) <= {"teacher", "results_dir"}
    teacher = {**base["teacher"], **extra["teacher"]}
    assert teacher_hash(teacher) != teacher_hash(base["teacher"])
    assert extra["results_dir"].startswith("results/agiqa3k_qbench_")
    source = ROOT / extra["teacher"]["import"]["path"]
    if (ROOT / "../shared").exists():
        assert source.is_file(), source
    jobs = planned_jobs(
        tmp_path,
        f"{extra['results_dir']}/table1.csv",
        configfiles=[QBENCH, overlay, qbench_override(tmp_path)],
    )
    assert jobs["teacher_zero_shot"] == 1 and jobs["distill"] == N_SEEDS
