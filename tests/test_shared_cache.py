"""The shared teacher cache (`teacher_cache`): shards keyed by the images' content, the pair set
and the teacher hash, reused by every results folder (docs/cache_schema.md).

The workflow test runs one small dataset through the teacher into results folder A, then plans
results folder B on the same images: Snakemake's own dry run must plan no teacher job (only the
cheap per-folder merges), and B's merged caches must equal A's. A MOS correction keeps the
images key (no teacher job); the same images at another path rewrite only the key table (no
teacher job); a changed image plans the teacher again, in both folders.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow_helpers import ROOT, planned_jobs, snakemake, write_override

from leaf.experiments import CACHE_JOB_FILES, Plan, merged_config
from leaf.report_results import stage_of
from leaf.teacher.cache_keys import images_key, images_of, images_step, pairs_key, pairs_step

SHARD_RULES = {"teacher_point", "teacher_pair"}


def manifest(ids, hashes, **extra) -> pd.DataFrame:
    return pd.DataFrame(
        {"image_id": ids, "path": [f"/x/{i}" for i in ids], "sha256": hashes, **extra}
    )


def test_images_key_covers_ids_order_and_content_only():
    base = manifest(["a", "b"], ["1" * 64, "2" * 64], mos=[1.0, 2.0])
    key = images_key(base)
    assert len(key) == 12 and int(key, 16) >= 0
    # MOS, paths and other columns are not what the teacher is shown.
    moved = base.assign(mos=[5.0, 0.0], path=["/elsewhere/a", "/elsewhere/b"], width=[3, 4])
    assert images_key(moved) == key
    assert images_key(base.iloc[::-1]) != key  # order: shards are blocks of it
    assert images_key(base.assign(sha256=["1" * 64, "3" * 64])) != key  # content
    assert images_key(base.assign(image_id=["a", "c"])) != key  # identity
    with pytest.raises(ValueError, match="sha256"):
        images_key(base.drop(columns="sha256"))


def test_pairs_key_covers_the_ordered_pairs():
    pairs = pd.DataFrame({"pair_id": [0, 1], "image_a": ["a", "b"], "image_b": ["b", "c"]})
    key = pairs_key(pairs)
    assert pairs_key(pairs.assign(extra=1)) == key
    assert pairs_key(pairs.iloc[::-1]) != key
    assert pairs_key(pairs.assign(image_b=["c", "c"])) != key


def test_key_table_steps_check_the_key(tmp_path):
    images = manifest(["a", "b"], ["1" * 64, "2" * 64], mos=[1.0, 2.0])
    table = tmp_path / "images.parquet"
    images_step(images=images, key=images_key(images), table=str(table))
    written = pd.read_parquet(table)
    assert list(written.columns) == ["image_id", "path", "sha256"]  # no MOS in the cache
    assert images_of(table).key == images_key(images)
    with pytest.raises(ValueError, match="not 000000000000"):
        images_step(images=images, key="0" * 12, table=str(tmp_path / "other.parquet"))
    pairs = pd.DataFrame({"pair_id": [0], "image_a": ["a"], "image_b": ["b"]})
    with pytest.raises(ValueError, match="pairs have the key"):
        pairs_step(pairs=pairs, key="0" * 12, table=str(tmp_path / "pairs.parquet"))


def test_cache_layout_is_shared_and_its_job_files_name_their_stage():
    config = merged_config([ROOT / "config" / "config.yaml"])
    plan = Plan(config)
    assert plan.teacher_cache == "results/teacher_cache"
    assert Plan({**config, "teacher_cache": None}).teacher_cache == "results/teacher_cache"
    other = Plan({**config, "results_dir": "results/other"})
    keys = {"images_key": "a" * 12, "pairs_key": "b" * 12, "teacher_hash": "c" * 12}
    shard = plan.cache_file("points_shard", shard=0, n_shards=2, **keys)
    assert shard == other.cache_file("points_shard", shard=0, n_shards=2, **keys)
    assert (
        shard == f"results/teacher_cache/images-{'a' * 12}/teacher_{'c' * 12}/points_0-of-2.parquet"
    )
    stages = {
        name: stage_of(pattern.format(shard=0, n_shards=2, **keys) + ".tsv")
        for name, pattern in CACHE_JOB_FILES.items()
    }
    assert stages == {
        "images": "cache_images",
        "pairs": "cache_pairs",
        "points_shard": "teacher point",
        "pairs_shard": "teacher pair",
    }
    assert plan.datasets()[0] == "demo"


def write_images(root: Path, n: int = 12) -> Path:
    """A generic dataset of ``n`` small, distinct images (gradient + noise) and their MOS."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(n):
        ramp = np.linspace(0, 255, 48)[None, :, None] * (index + 1) / n
        pixels = np.clip(ramp + rng.normal(0, 8 * (index % 4), (40, 48, 3)), 0, 255)
        name = f"img{index:02d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(root / name)
        rows.append({"path": name, "mos": 1.0 + 4.0 * index / (n - 1)})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def folder_config(tmp_path: Path, results: str, root: Path) -> list[Path]:
    settings = {
        "results_dir": results,
        "datasets": {
            "mine": {"adapter": "generic", "root": str(root), "options": {"labels": "labels.csv"}}
        },
        "tables": {
            "table1": {"datasets": ["mine"]},
            **dict.fromkeys(("table2", "table3", "table4", "fig2", "fig4")),
        },
        "extra_teachers": {"BRISQUE-sharp": None},
        "split": {"group_by": None},
    }
    return [write_override(tmp_path / f"{Path(results).name}.yaml", settings)]


def teacher_targets(configfiles: list[Path]) -> list[str]:
    plan = Plan(merged_config([ROOT / "config" / "config.yaml", *configfiles]))
    folder = f"{plan.results}/mine/teacher/{plan.teacher.hash}"
    return [f"{folder}/points.parquet", f"{folder}/pairs_kept.parquet"]


@pytest.mark.slow
def test_second_results_folder_plans_no_teacher_job_until_an_image_changes(tmp_path):
    root = tmp_path / "dataset"
    root.mkdir()
    write_images(root)
    folder_a = folder_config(tmp_path, "results/a", root)
    folder_b = folder_config(tmp_path, "results/b", root)
    targets_a, targets_b = teacher_targets(folder_a), teacher_targets(folder_b)
    snakemake(tmp_path, *targets_a, configfiles=folder_a)
    cache = tmp_path / "results" / "teacher_cache"
    shards = sorted(cache.rglob("*_0-of-1.parquet"))
    assert len(shards) == 2  # one points and one pairs shard, outside both results folders
    stamps = {path: path.stat().st_mtime_ns for path in shards}

    # Before B's checkpoints ran, its keys are unknown: Snakemake plans them and the merges.
    before = planned_jobs(tmp_path, *targets_b, configfiles=folder_b)
    assert before["prepare"] == 1 and not SHARD_RULES & set(before), before
    snakemake(tmp_path, "data", configfiles=folder_b)
    assert planned_jobs(tmp_path, *targets_b, configfiles=folder_b) == {
        "merge_points": 1,
        "merge_pairs": 1,
        "filter_pairs": 1,
    }
    snakemake(tmp_path, *targets_b, configfiles=folder_b)
    for target_a, target_b in zip(targets_a, targets_b, strict=True):
        frame_a, frame_b = (pd.read_parquet(tmp_path / t) for t in (target_a, target_b))
        pd.testing.assert_frame_equal(frame_a, frame_b)
    assert {path: path.stat().st_mtime_ns for path in shards} == stamps
    # The shard jobs' logs are in the folder that ran them.
    assert list((tmp_path / "results" / "a" / "logs").rglob("point_0-of-1.log"))
    assert not list((tmp_path / "results" / "b" / "logs").rglob("point_0-of-1.log"))

    # A MOS correction reruns prepare and what follows, but keeps the images key: no teacher.
    labels = pd.read_csv(root / "labels.csv")
    labels.loc[0, "mos"] += 0.5
    labels.to_csv(root / "labels.csv", index=False)
    assert planned_jobs(tmp_path, *targets_b, configfiles=folder_b).get("prepare") == 1
    snakemake(tmp_path, "data", configfiles=folder_b)
    assert not SHARD_RULES & set(planned_jobs(tmp_path, *targets_b, configfiles=folder_b))

    # The same images at another path (folder C): only the images' key table is rewritten.
    moved = shutil.copytree(root, tmp_path / "moved")
    folder_c = folder_config(tmp_path, "results/c", moved)
    targets_c = teacher_targets(folder_c)
    snakemake(tmp_path, "data", configfiles=folder_c)
    jobs = planned_jobs(tmp_path, *targets_c, configfiles=folder_c)
    assert jobs.get("cache_images") == 1 and not SHARD_RULES & set(jobs), jobs

    # A changed image reruns prepare, and with its new content key the teacher, in any folder.
    Image.new("RGB", (48, 40), (200, 30, 30)).save(root / "img03.png")
    for configfiles, targets in ((folder_b, targets_b), (folder_a, targets_a)):
        assert planned_jobs(tmp_path, *targets, configfiles=configfiles).get("prepare") == 1
        snakemake(tmp_path, "data", configfiles=configfiles)
        jobs = planned_jobs(tmp_path, *targets, configfiles=configfiles)
        assert SHARD_RULES <= set(jobs), jobs
    assert len(list(cache.glob("images-*"))) == 1  # the new key's shards are not written yet
