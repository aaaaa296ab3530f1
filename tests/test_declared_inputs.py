"""Every file that decides a result is a declared input: editing a dataset's label file reruns
``prepare`` and everything downstream of it (Snakemake's own dry run decides).

For each dataset adapter (its real label-file format, a tiny fixture dataset), the manifest and
split are built for real; then one MOS in the label file is corrected and the dry run must plan
``prepare`` again and, through the changed manifest, the split and the rest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import (
    FIXTURES,
    LABEL_FILES,
    planned_jobs,
    snakemake,
    tiny_dataset,
    write_override,
)

from leaf.datasets import ADAPTERS, label_file

pytestmark = pytest.mark.slow


def generic_dataset(root: Path) -> dict:
    """The generic fixture (a CSV of paths and MOS) with its images."""
    root.mkdir(parents=True)
    shutil.copy(FIXTURES / "generic" / "labels.csv", root / "labels.csv")
    labels = pd.read_csv(root / "labels.csv")
    from PIL import Image

    for name in labels["path"]:
        (root / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (24, 32), (90, 120, 30)).save(root / "imgs" / name)
    return {"adapter": "generic", "options": {"labels": "labels.csv", "image_dir": "imgs"}}


def edit_first_mos(path: Path) -> None:
    """Change the first row's MOS (the last numeric field of a data row) in place."""
    lines = path.read_text().splitlines()
    row = 0 if path.name == "info_train.csv" else 1  # AIGIQA-20K's file has no header
    fields = lines[row].split(",")
    for index in range(len(fields) - 1, -1, -1):
        try:
            value = float(fields[index])
        except ValueError:
            continue
        fields[index] = str(value + 0.5)
        break
    lines[row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("adapter", ["generic", *sorted(LABEL_FILES)])
def test_editing_a_label_file_reruns_prepare_and_what_follows(adapter, tmp_path):
    assert adapter in ADAPTERS
    root = tmp_path / "data"
    if adapter == "generic":
        section = generic_dataset(root)
    else:
        tiny_dataset(adapter, root)
        section = {"adapter": adapter, "options": {}}
    section["root"] = str(root)
    source = label_file(section["adapter"], root, section["options"])
    assert source is not None and source.is_file()
    override = write_override(
        tmp_path / "override.yaml",
        {
            "results_dir": "results",
            "datasets": {"mine": section},
            "tables": {
                "aigc_comparison": {"datasets": ["mine"]},
                "ugc_comparison": None,
                "stage1_ablation": None,
                "teacher_backbone_grid": None,
                "teacher_vs_mos": None,
                "mos_ratio_curve": None,
            },
            "extra_teachers": {"BRISQUE-sharp": None},
            "split": {"group_by": None},
        },
    )
    target = "results/mine/split.parquet"
    snakemake(tmp_path, target, configfiles=[override])
    assert planned_jobs(tmp_path, target, configfiles=[override]) == {}

    edit_first_mos(source)
    jobs = planned_jobs(tmp_path, target, configfiles=[override])
    assert jobs.get("prepare") == 1 and jobs.get("split") == 1, jobs
