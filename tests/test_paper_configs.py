"""The ready-to-run configs: config/paper/*.yaml (GPU protocol), config/agiqa3k_*.yaml (real
data on CPU) against tiny datasets in each benchmark's real file format.

Each paper dataset config (over config/paper/protocol.yaml) runs its real ``prepare`` and
``split`` jobs on the tiny dataset (label file copied from tests/fixtures/<dataset>/, images
generated here), then must plan its whole table DAG in a dry run; all four together with
config/paper/all.yaml must plan every table and figure. Every shipped config runs the jobs up
to the split of each dataset its ``rule all`` reaches (the demo's included).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_helpers import (
    FIXTURES,
    LABEL_FILES,
    ROOT,
    planned_jobs,
    shipped_config_sets,
    snakemake,
    tiny_dataset,
    write_override,
)

from leaf.config_checks import teacher_sections
from leaf.experiments import Plan, merged_config

PAPER = ROOT / "config" / "paper"
PROTOCOL = PAPER / "protocol.yaml"
QBENCH = ROOT / "config" / "agiqa3k_qbench.yaml"
# dataset -> the `tables` key and file of the paper table it belongs to (AIGC: table1, UGC: table2)
PAPER_TABLE = {
    "agiqa3k": ("aigc_comparison", "table1"),
    "aigiqa20k": ("aigc_comparison", "table1"),
    "koniq10k": ("ugc_comparison", "table2"),
    "spaq": ("ugc_comparison", "table2"),
}
N_SEEDS, N_RATIOS = 5, 3


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def paper_config(dataset: str) -> dict:
    """What Snakemake sees for the protocol + the dataset file (nested keys merged)."""
    return merged_config([ROOT / "config" / "config.yaml", PROTOCOL, PAPER / f"{dataset}.yaml"])


def full_mode_jobs(shards: int, n_teachers: int = 1) -> dict[str, int]:
    """Planned jobs of one dataset's benchmark table (table1/2) in full mode, split done (the
    key tables of the shared teacher cache: one for the images, one for the pairs)."""
    return {
        "pairs": 1,
        "subsets": N_SEEDS,
        "cache_images": 1,
        "cache_pairs": 1,
        "teacher_point": shards * n_teachers,
        "teacher_pair": shards * n_teachers,
        "merge_points": n_teachers,
        "merge_pairs": n_teachers,
        "filter_pairs": n_teachers,
        "teacher_zero_shot": n_teachers,
        "image_cache": 1,
        "distill": N_SEEDS,
        "calibrate": N_SEEDS * (N_RATIOS - 1),
        "evaluate": N_SEEDS * N_RATIOS,
        "calibrate_cft": N_SEEDS * (N_RATIOS - 1),
        "evaluate_cft": N_SEEDS * (N_RATIOS - 1),
        "results_table": 1,
    }


@pytest.mark.parametrize("dataset", sorted(LABEL_FILES))
def test_paper_config_prepares_splits_and_plans_its_table(dataset, tmp_path):
    config_file = PAPER / f"{dataset}.yaml"
    config = paper_config(dataset)
    assert config["teacher"]["backend"] == "vllm"
    assert config["teacher"]["vllm"]["preset"] == "internvl3_5_8b"
    student = config["student"]
    assert (student["backbone"], student["weights"], student["mode"]) == (
        "convnext_base",
        "timm",
        "full",
    )
    assert (student["full"]["crop"], student["full"]["resize"]) == (224, 256)
    assert len(config["seeds"]) == N_SEEDS and config["calibration"]["ratios"] == [0, 0.1, 0.3]
    assert config["datasets"][dataset]["root"] == f"data/{dataset}"  # documented placeholder
    key, table = PAPER_TABLE[dataset]
    assert config["tables"][key]["datasets"] == [dataset]

    labels = tiny_dataset(dataset, tmp_path / "data" / dataset)
    override = write_override(
        tmp_path / "override.yaml",
        {"datasets": {dataset: {"root": str(tmp_path / "data" / dataset)}}},
    )
    results = config["results_dir"]
    configfiles = [PROTOCOL, config_file, override]
    snakemake(tmp_path, f"{results}/{dataset}/split.parquet", configfiles=configfiles)
    split = pd.read_parquet(tmp_path / results / dataset / "split.parquet")
    assert sorted(split["image_id"]) == sorted(labels["image_id"])
    if dataset == "koniq10k":  # the official split: exactly the rows whose set is "test"
        official = labels.loc[labels["set"] == "test", "image_id"]
        assert sorted(split.loc[split["split"] == "test", "image_id"]) == sorted(official)
    if dataset in ("agiqa3k", "aigiqa20k"):  # grouped by prompt: no prompt on both sides
        prompts = labels.set_index("image_id")["prompt"]
        sides = split.assign(prompt=split["image_id"].map(prompts)).groupby("prompt")["split"]
        assert (sides.nunique() == 1).all()

    jobs = planned_jobs(tmp_path, f"{results}/{table}.csv", configfiles=configfiles)
    assert jobs == full_mode_jobs(config["teacher"]["shards"])


def test_paper_configs_together_plan_every_table_and_figure(tmp_path):
    overrides = {}
    for dataset in LABEL_FILES:
        tiny_dataset(dataset, tmp_path / "data" / dataset)
        overrides[dataset] = {"root": str(tmp_path / "data" / dataset)}
    override = write_override(tmp_path / "override.yaml", {"datasets": overrides})
    datasets = [PAPER / f"{dataset}.yaml" for dataset in sorted(LABEL_FILES)]
    configfiles = [PROTOCOL, *datasets, PAPER / "all.yaml", override]
    jobs = planned_jobs(tmp_path, configfiles=configfiles)
    # table1 (agiqa3k, aigiqa20k), table2 (koniq10k, spaq), and agiqa3k.yaml's table3, table4,
    # fig2 and fig4: every table and figure of the paper from one run.
    assert jobs["results_table"] == 4 and jobs["fig2"] == jobs["fig4"] == 1
    assert jobs["image_cache"] == 4
    # The main teacher on each dataset, plus table 4's three other teachers on AGIQA-3K
    # (Qwen3-VL-8B, InternVL3.5-38B, Qwen3-VL-32B).
    assert jobs["teacher_zero_shot"] == 7
    # Stage 1: the main runs of 4 datasets + AGIQA-3K's 3 ablation variants and the 7 other
    # cells of its 4-teacher x 2-backbone grid.
    assert jobs["distill"] == (4 + 3 + 7) * N_SEEDS
    assert jobs["prepare"] == 4 and jobs["split"] == 4


def test_agiqa3k_paper_config_plans_the_ablation_grid_and_figures(tmp_path):
    tiny_dataset("agiqa3k", tmp_path / "data" / "agiqa3k")
    override = write_override(
        tmp_path / "override.yaml",
        {"datasets": {"agiqa3k": {"root": str(tmp_path / "data" / "agiqa3k")}}},
    )
    jobs = planned_jobs(tmp_path, configfiles=[PROTOCOL, PAPER / "agiqa3k.yaml", override])
    # table1, table3 (ablation), table4 (4 teachers x 2 backbones), fig2, fig4.
    assert jobs["results_table"] == 3 and jobs["fig2"] == 1 and jobs["fig4"] == 1
    # InternVL3.5-8B, Qwen3-VL-8B, InternVL3.5-38B and Qwen3-VL-32B (the paper's table 4).
    assert jobs["teacher_zero_shot"] == 4
    # Stage-1 runs: main (5) + 3 other ablation variants (15) + the grid's 7 other cells (35).
    assert jobs["distill"] == 11 * N_SEEDS


def qbench_override(tmp_path: Path) -> Path:
    """The AGIQA-3K fixture dataset and Q-Bench fixture files in place of the shared data."""
    root = tmp_path / "agiqa3k"
    tiny_dataset("agiqa3k", root)
    three, two = FIXTURES / "qbench" / "three_levels.json", FIXTURES / "qbench" / "two_levels.json"
    settings = {
        "datasets": {"agiqa3k": {"root": str(root)}},
        "teacher": {"import": {"path": str(three)}},
        "extra_teachers": {
            "LLaVA-1.5": {"import": {"path": str(two)}},
            "Qwen-VL": {"import": {"path": str(three)}},
            "Shikra": None,  # would judge exactly like LLaVA-1.5 on the same fixture
            "Q-Bench ensemble": {"import": {"path": [str(two), str(three)]}},
        },
        "tables": {
            "teacher_backbone_grid": {
                "teachers": ["mPLUG-Owl", "LLaVA-1.5", "Qwen-VL", "Q-Bench ensemble"]
            }
        },
    }
    return write_override(tmp_path / "override.yaml", settings)


def test_agiqa3k_qbench_config_is_point_only_and_native(tmp_path):
    config = load_yaml(QBENCH)
    assert config["results_dir"] == "results/agiqa3k_qbench"
    assert config["datasets"]["agiqa3k"]["split"]["group_by"] == "prompt"
    assert "split" not in config  # a top-level split would also reach the demo's dataset
    assert config["teacher"]["import"]["path"] == (
        "../shared/teachers/qbench-agiqa3k/mplug_owl.json"
    )
    assert config["student"]["pooling"] == "native_meanmax"
    assert config["distill"]["use_pair"] is False  # the imported teachers are point-only
    folder = (ROOT / config["teacher"]["import"]["path"]).parent
    for name, teacher in config["extra_teachers"].items():
        if teacher is not None:
            sources = teacher["import"]["path"]
            for source in [sources] if isinstance(sources, str) else sources:
                assert (ROOT / source).parent == folder, name
                if (ROOT / "../shared").exists():
                    assert (ROOT / source).is_file(), source
    assert len(config["extra_teachers"]["Q-Bench ensemble"]["import"]["path"]) == 4
    configfiles = [QBENCH, qbench_override(tmp_path)]
    jobs = planned_jobs(tmp_path, "results/agiqa3k_qbench/table1.csv", configfiles=configfiles)
    assert jobs["distill"] == N_SEEDS and jobs["evaluate"] == N_SEEDS * N_RATIOS
    assert jobs["teacher_point"] == 1 and jobs["features"] == 1
    # CFT-only rows: stage 2 alone, no distillation behind them.
    assert jobs["calibrate_cft"] == jobs["evaluate_cft"] == N_SEEDS * (N_RATIOS - 1)

    # rule all: table1 + table4 (the teacher grid): every teacher once, the features once.
    everything = planned_jobs(tmp_path, configfiles=configfiles)
    assert everything["teacher_point"] == everything["teacher_zero_shot"] == 4
    assert everything["features"] == 1 and everything["distill"] == 4 * N_SEEDS
    assert everything["results_table"] == 2


def stand_ins(config: dict, folder: Path) -> dict:
    """Override settings that put a tiny dataset in place of every non-demo dataset of
    ``config``, an empty file in place of every imported judgments file (the dry run only needs
    it to exist), and a small demo."""
    datasets = {}
    for name, section in config["datasets"].items():
        if section["adapter"] != "demo":
            tiny_dataset(section["adapter"], folder / "data" / name)
            datasets[name] = {"root": str(folder / "data" / name)}
    settings: dict = {"datasets": datasets, "demo": {"size": 32, "levels": 2}}
    for key, name, section in teacher_sections(config):
        if section["backend"] != "import":
            continue
        paths = section["import"]["path"]
        files = []
        for index, _ in enumerate(paths if isinstance(paths, list) else [paths]):
            files.append(folder / "judgments" / f"{name}_{index}.json")
            files[-1].parent.mkdir(parents=True, exist_ok=True)
            files[-1].write_text("")
        imported = {
            "import": {"path": [str(f) for f in files] if len(files) > 1 else str(files[0])}
        }
        if key == "teacher":
            settings["teacher"] = imported
        else:
            settings.setdefault("extra_teachers", {})[name] = imported
    return settings


def reported_datasets(plan: Plan) -> set[str]:
    """Every dataset a configured table or figure reports."""
    names = set()
    for spec in plan.tables.values():
        if isinstance(spec, dict):
            names |= set(spec.get("datasets", [])) | (
                {spec["dataset"]} if "dataset" in spec else set()
            )
    return names


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(shipped_config_sets()))
def test_every_shipped_config_splits_every_dataset_of_its_rule_all(name, tmp_path):
    """``rule all`` of every shipped config plans, and its jobs up to each dataset's split run
    (on tiny stand-ins for the datasets): a split setting that does not fit a dataset the run
    reaches, such as a top-level ``split.group_by: prompt`` that also applies to the demo,
    fails here rather than hours into a real run."""
    files = shipped_config_sets()[name]
    config = merged_config([ROOT / "config" / "config.yaml", *files])
    override = write_override(tmp_path / "override.yaml", stand_ins(config, tmp_path))
    snakemake(tmp_path, "--until", "split", configfiles=[*files, override])
    results = tmp_path / config["results_dir"]
    datasets = reported_datasets(Plan(config))
    assert datasets
    for dataset in datasets:
        assert (results / dataset / "split.parquet").is_file(), dataset
