"""The shared teacher cache (`teacher_cache`): shards keyed by the images' content, the pair set
and the teacher hash, reused by every results folder (docs/cache_schema.md). The keys are
computed while Snakemake plans (leaf.teacher.cache_keys), with no checkpoint.

The workflow test runs one small dataset through the teacher into results folder A, then plans
results folder B on the same images: Snakemake's own dry run must plan no teacher job (only
B's data jobs and the cheap per-folder merges), and B's merged caches must equal A's. A MOS
correction keeps the keys (no teacher job); the same images at another path plan no teacher
job; a changed image plans the teacher again, in both folders. Run three times in a row from
scratch, the first folder always ends with its merged caches (the checkpoint version of this
cache once ended with rc 0 and the caches missing).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow_helpers import ROOT, planned_jobs, snakemake, write_override

from leaf.datasets import DatasetError, build_manifest, load_labels
from leaf.experiments import Plan, merged_config
from leaf.report_results import stage_of
from leaf.teacher import cache_keys
from leaf.teacher.cache import merge_caches, write_points_cache
from leaf.teacher.cache_keys import dataset_keys, dataset_pairs, images_key
from leaf.teacher.levels import Levels
from leaf.teacher.steps import cache_images_step, cache_pairs_step

SHARD_RULES = {"teacher_point", "teacher_pair"}
SPLIT = {"test_fraction": 0.25, "seed": 0, "group_by": None, "official_column": None}
PAIRS = {"per_image": 1.0, "seed": 0}


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


def generic(root: Path) -> dict:
    return {"adapter": "generic", "root": str(root), "options": {"labels": "labels.csv"}}


def test_planning_keys_equal_the_manifest_and_follow_what_defines_them(tmp_path):
    root = write_images(tmp_path / "data")
    dataset = generic(root)
    keys = dataset_keys(dataset, SPLIT, PAIRS, memo_dir=tmp_path / "memo")
    assert keys.kind == "content"
    # The key computed while planning is the key of the manifest `prepare` writes.
    manifest = build_manifest(load_labels("generic", root, dataset["options"]), progress=False)
    assert keys.images_key == images_key(manifest)
    # A MOS edit changes neither key; a split or pair setting changes the pairs key only.
    labels = pd.read_csv(root / "labels.csv")
    labels.assign(mos=labels["mos"][::-1].to_numpy()).to_csv(root / "labels.csv", index=False)
    assert dataset_keys(dataset, SPLIT, PAIRS, memo_dir=tmp_path / "memo") == keys
    other = dataset_keys(dataset, {**SPLIT, "seed": 1}, PAIRS)
    assert other.images_key == keys.images_key and other.pairs_key != keys.pairs_key
    assert dataset_keys(dataset, SPLIT, {**PAIRS, "per_image": 2.0}).pairs_key != keys.pairs_key
    # A changed image changes both.
    Image.new("RGB", (48, 40), (200, 30, 30)).save(root / "img03.png")
    changed = dataset_keys(dataset, SPLIT, PAIRS, memo_dir=tmp_path / "memo")
    assert changed.images_key != keys.images_key and changed.pairs_key != keys.pairs_key


def test_a_missing_image_names_the_label_file_and_its_row(tmp_path):
    root = write_images(tmp_path / "data", n=4)
    (root / "img02.png").unlink()
    with pytest.raises(DatasetError, match=r"labels\.csv, row 3: .*img02\.png: cannot read"):
        dataset_keys(generic(root), SPLIT, PAIRS)


def test_digest_memo_reads_an_unchanged_image_once(tmp_path, monkeypatch):
    root = write_images(tmp_path / "data", n=4)
    memo = tmp_path / "memo"
    first = dataset_keys(generic(root), SPLIT, PAIRS, memo_dir=memo)
    read = []
    real = cache_keys.file_sha256
    monkeypatch.setattr(cache_keys, "file_sha256", lambda path: read.append(path) or real(path))
    assert dataset_keys(generic(root), SPLIT, PAIRS, memo_dir=memo) == first
    assert read == []
    Image.new("RGB", (48, 40), (0, 30, 30)).save(root / "img01.png")
    dataset_keys(generic(root), SPLIT, PAIRS, memo_dir=memo)
    assert [Path(path).name for path in read] == ["img01.png"]


def test_generated_and_pending_datasets_have_keys_before_their_files_exist(tmp_path):
    demo = {"adapter": "demo", "root": str(tmp_path / "demo")}
    keys = dataset_keys(demo, SPLIT, PAIRS, generator={"size": 48, "seed": 0})
    assert keys.kind == "generated"
    assert dataset_keys(demo, SPLIT, PAIRS, generator={"size": 64, "seed": 0}) != keys
    missing = dataset_keys(generic(tmp_path / "absent"), SPLIT, PAIRS)
    assert missing.kind == "pending"
    config = mine_config(tmp_path / "absent", tmp_path)
    with pytest.raises(DatasetError, match="absent"):
        cache_images_step(str(tmp_path / "t.parquet"), missing.images_key, config)


def mine_config(root: Path, tmp_path: Path) -> dict:
    """The workflow config with the generic dataset ``mine`` at ``root`` (the demo kept)."""
    override = {"datasets": {"mine": generic(root)}, "teacher_cache": str(tmp_path / "cache")}
    return merged_config(
        [ROOT / "config" / "config.yaml", write_override(tmp_path / "o.yaml", override)]
    )


def test_key_table_steps_write_the_dataset_and_check_its_key(tmp_path):
    root = write_images(tmp_path / "data")
    config = mine_config(root, tmp_path)
    keys = Plan(config).cache_keys("mine")
    cache_images_step(str(tmp_path / "images.parquet"), keys.images_key, config)
    written = pd.read_parquet(tmp_path / "images.parquet")
    assert list(written.columns) == ["image_id", "path", "sha256"]  # no MOS in the cache
    assert images_key(written) == keys.images_key
    cache_pairs_step(str(tmp_path / "pairs.parquet"), keys.images_key, keys.pairs_key, config)
    split = Plan(config).dataset_split("mine")
    pairs = {"per_image": config["pairs"]["per_image"], "seed": config["pairs"]["seed"]}
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "pairs.parquet"), dataset_pairs(generic(root), split, pairs)
    )
    # Files changed between planning and running: the step refuses, naming the key.
    with pytest.raises(DatasetError, match="000000000000.*run it again"):
        cache_images_step(str(tmp_path / "other.parquet"), "0" * 12, config)
    with pytest.raises(DatasetError, match="pairs key 000000000000"):
        cache_pairs_step(str(tmp_path / "other.parquet"), keys.images_key, "0" * 12, config)
    assert not (tmp_path / "other.parquet").exists()


def test_merge_refuses_shards_judged_on_other_images(tmp_path):
    levels = Levels.from_config({"words": ["good", "poor"], "values": [1.0, 0.0]})
    shard = tmp_path / "points_0-of-1.parquet"
    write_points_cache(shard, ["a", "b"], np.zeros((2, 2)), levels, {"shard": 0, "n_shards": 1})
    merged = tmp_path / "merged.parquet"
    expected = pd.DataFrame({"image_id": ["a", "c"]})
    with pytest.raises(ValueError, match="manifest.parquet.*row 1"):
        merge_caches([str(shard)], str(merged), "points", expected, "manifest.parquet")
    assert not merged.exists()  # nothing half-written
    merge_caches([str(shard)], str(merged), "points", pd.DataFrame({"image_id": ["a", "b"]}))
    assert merged.is_file()


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
    cache_rules = ("cache_images", "cache_pairs", "teacher_point", "teacher_pair")
    for rule in cache_rules:
        benchmark = plan.benchmark(rule).format(shard=0, n_shards=2, **keys)
        assert benchmark.startswith("results/benchmarks/images-")  # beside the run's own
        assert stage_of(benchmark.removeprefix("results/benchmarks/")) == rule
    assert plan.datasets()[0] == "demo"


def write_images(root: Path, n: int = 12) -> Path:
    """A generic dataset of ``n`` small, distinct images (gradient + noise) and their MOS."""
    root.mkdir(parents=True, exist_ok=True)
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
        "datasets": {"mine": generic(root)},
        "tables": {
            "aigc_comparison": {"datasets": ["mine"]},
            **dict.fromkeys(
                (
                    "ugc_comparison",
                    "stage1_ablation",
                    "teacher_backbone_grid",
                    "teacher_vs_mos",
                    "mos_ratio_curve",
                )
            ),
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
@pytest.mark.parametrize("attempt", range(3))
def test_first_results_folder_always_ends_with_its_teacher_caches(tmp_path, attempt):
    """From scratch, in one call, the teacher's merged caches exist afterwards (the checkpoint
    design once dropped the teacher jobs and ended with rc 0 without them)."""
    root = write_images(tmp_path / "dataset")
    folder_a = folder_config(tmp_path, "results/a", root)
    targets = teacher_targets(folder_a)
    snakemake(tmp_path, *targets, configfiles=folder_a)
    assert all((tmp_path / target).is_file() for target in targets)


@pytest.mark.slow
def test_second_results_folder_plans_no_teacher_job_until_an_image_changes(tmp_path):
    root = write_images(tmp_path / "dataset")
    folder_a = folder_config(tmp_path, "results/a", root)
    folder_b = folder_config(tmp_path, "results/b", root)
    targets_a, targets_b = teacher_targets(folder_a), teacher_targets(folder_b)
    # Before anything ran, the dry run lists the teacher shards (keys known while planning).
    assert SHARD_RULES <= set(planned_jobs(tmp_path, *targets_a, configfiles=folder_a))
    snakemake(tmp_path, *targets_a, configfiles=folder_a)
    cache = tmp_path / "results" / "teacher_cache"
    shards = sorted(cache.rglob("*_0-of-1.parquet"))
    assert len(shards) == 2  # one points and one pairs shard, outside both results folders
    stamps = {path: path.stat().st_mtime_ns for path in shards}
    # The pairs the cache drew from the dataset are the ones the results folder drew.
    pairs_tables = list(cache.glob("images-*/pairs-*.parquet"))
    assert len(pairs_tables) == 1
    pd.testing.assert_frame_equal(
        pd.read_parquet(pairs_tables[0]),
        pd.read_parquet(tmp_path / "results" / "a" / "mine" / "pairs.parquet"),
    )

    # B: its own data jobs and merges, no teacher job, no key table.
    assert planned_jobs(tmp_path, *targets_b, configfiles=folder_b) == {
        "prepare": 1,
        "split": 1,
        "pairs": 1,
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

    # A MOS correction reruns prepare and what follows, but keeps the keys: no teacher job.
    labels = pd.read_csv(root / "labels.csv")
    labels.loc[0, "mos"] += 0.5
    labels.to_csv(root / "labels.csv", index=False)
    jobs = planned_jobs(tmp_path, *targets_b, configfiles=folder_b)
    assert jobs.get("prepare") == 1 and not SHARD_RULES & set(jobs), jobs

    # The same images at another path (folder C): no teacher job either, and the run ends
    # with C's merged caches (an `ancient` key table once made Snakemake drop them, rc 0).
    moved = shutil.copytree(root, tmp_path / "moved")
    folder_c = folder_config(tmp_path, "results/c", moved)
    targets_c = teacher_targets(folder_c)
    jobs = planned_jobs(tmp_path, *targets_c, configfiles=folder_c)
    assert jobs.get("prepare") == 1 and jobs.get("merge_points") == 1, jobs
    assert not (SHARD_RULES | {"cache_images", "cache_pairs"}) & set(jobs), jobs
    snakemake(tmp_path, *targets_c, configfiles=folder_c)
    assert all((tmp_path / target).is_file() for target in targets_c)

    # A changed image reruns prepare, and with its new content key the teacher, in any folder.
    Image.new("RGB", (48, 40), (200, 30, 30)).save(root / "img03.png")
    for configfiles, targets in ((folder_b, targets_b), (folder_a, targets_a)):
        jobs = planned_jobs(tmp_path, *targets, configfiles=configfiles)
        assert jobs.get("prepare") == 1 and SHARD_RULES <= set(jobs), jobs
    assert len(list(cache.glob("images-*"))) == 1  # the new key's shards are not written yet
