"""Teacher cache (write/read/validate/filter/merge), teacher hash and factory, teacher steps."""

import json
import logging
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from leaf.teacher import cache
from leaf.teacher.backend import TeacherOutputError
from leaf.teacher.brisque_backend import BrisqueTeacher
from leaf.teacher.cache import (
    filter_pairs,
    filter_pairs_step,
    merge_caches,
    read_cache,
    write_pairs_cache,
    write_points_cache,
)
from leaf.teacher.factory import judgment_config, make_backend, speed_options, teacher_hash
from leaf.teacher.import_backend import ImportedTeacher
from leaf.teacher.levels import Levels
from leaf.teacher.steps import (
    merge_pairs_step,
    merge_points_step,
    teacher_pair_step,
    teacher_point_step,
)

LEVELS = Levels(("Excellent", "Good", "Fair", "Poor", "Bad"), (5.0, 4.0, 3.0, 2.0, 1.0))
PROVENANCE = {"backend": "test", "model": "none", "token_ids": np.array([1, 2]), "n": np.int64(3)}
BRISQUE_CFG = {
    "backend": "brisque",
    "levels": {"words": list(LEVELS.words), "values": [5, 4, 3, 2, 1]},
    "tau": 0.1,
    "shards": 1,
    "brisque": {"best": 0.0, "worst": 100.0, "sigma": 0.75, "temperature": 0.5, "progress": False},
}


def _points(tmp_path, logliks=None, ids=("a.png", "b.png")):
    logliks = (
        np.log([[1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 1.0, 1.0, 1.0, 1.0]])
        if logliks is None
        else logliks
    )
    path = tmp_path / "points.parquet"
    write_points_cache(path, list(ids), logliks, LEVELS, PROVENANCE)
    return path


def _pairs(tmp_path, logprobs, name="pairs.parquet"):
    n = len(logprobs)
    path = tmp_path / name
    ids = [f"p{i}" for i in range(n)]
    images_a, images_b = [f"a{i}.png" for i in range(n)], [f"b{i}.png" for i in range(n)]
    write_pairs_cache(path, ids, images_a, images_b, np.asarray(logprobs), {"backend": "test"})
    return path


def test_points_cache_roundtrip_columns_and_metadata(tmp_path):
    frame, metadata = read_cache(_points(tmp_path))
    words = ["excellent", "good", "fair", "poor", "bad"]
    expected = ["image_id"] + [f"loglik_{w}" for w in words] + [f"p_{w}" for w in words] + ["score"]
    assert list(frame.columns) == expected
    assert frame["image_id"].tolist() == ["a.png", "b.png"]
    assert frame.loc[0, [f"p_{w}" for w in words]].tolist() == pytest.approx(np.arange(1, 6) / 15)
    assert frame["score"].tolist() == pytest.approx([7 / 3, (25 + 4 + 3 + 2 + 1) / 9])
    assert metadata["kind"] == "points" and metadata["backend"] == "test"
    assert metadata["token_ids"] == [1, 2] and metadata["n"] == 3
    assert metadata["levels"] == {"words": list(LEVELS.words), "values": [5, 4, 3, 2, 1]}
    assert datetime.fromisoformat(metadata["created_at"]).utcoffset().total_seconds() == 0
    assert json.loads(pq.read_schema(tmp_path / "points.parquet").metadata[b"leaf"]) == metadata


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_loglik_names_image_and_word_and_writes_nothing(tmp_path, bad):
    logliks = np.zeros((2, 5))
    logliks[1, 3] = bad
    with pytest.raises(TeacherOutputError, match=r"'b.png'.*'Poor'"):
        _points(tmp_path, logliks)
    assert list(tmp_path.iterdir()) == []


def test_points_shape_and_duplicates_are_checked(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        _points(tmp_path, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="duplicate"):
        _points(tmp_path, np.zeros((2, 5)), ids=("a.png", "a.png"))


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = _points(tmp_path)
    before = path.read_bytes()

    def broken_write(table, where, **kwargs):
        open(where, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        _points(tmp_path, np.zeros((2, 5)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["points.parquet"]


def test_pairs_cache_derived_columns(tmp_path):
    logprobs = [[np.log(0.9), np.log(0.1)], [-0.3, -0.3], [-5.0, -1e-3], [-1e-9, 0.0]]
    frame, metadata = read_cache(_pairs(tmp_path, logprobs))
    assert list(frame.columns) == list(cache.PAIR_COLUMNS)
    assert frame["p_A"].tolist() == pytest.approx([0.9, 0.5, 1 / (1 + np.exp(5 - 1e-3)), 0.5])
    assert frame["t_ab"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert frame.loc[0, "omega"] == pytest.approx(1 - 0.3250829734 / np.log(2), abs=1e-9)
    assert frame.loc[1, "omega"] == 0.0
    assert (frame["omega"] >= 0).all()  # a near tie can give 1 - H/log 2 = -2e-16: clipped
    assert metadata["kind"] == "pairs"


def test_non_finite_pair_logprob_names_pair_and_images(tmp_path):
    with pytest.raises(TeacherOutputError, match=r"'B'.*'p1'.*'a1.png', 'b1.png'"):
        _pairs(tmp_path, [[0.0, 0.0], [0.0, np.nan]])


def test_empty_pairs_cache(tmp_path):
    frame, _ = read_cache(_pairs(tmp_path, np.empty((0, 2))))
    assert frame.empty and list(frame.columns) == list(cache.PAIR_COLUMNS)


def test_read_cache_rejects_plain_parquet(tmp_path):
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="not a LEAF teacher cache"):
        read_cache(tmp_path / "plain.parquet")


def test_filter_pairs_and_step(tmp_path):
    logprobs = [[np.log(p), np.log(1 - p)] for p in (0.5, 0.6, 0.9, 0.01, 0.5 + 1e-12)]
    path = _pairs(tmp_path, logprobs)
    frame, _ = read_cache(path)
    assert len(filter_pairs(frame, 0.0)) == 5
    assert filter_pairs(frame, 0.5)["pair_id"].tolist() == ["p2", "p3"]
    assert filter_pairs(frame, 1.0).empty
    for tau in (-0.1, 1.5):
        with pytest.raises(ValueError, match="tau"):
            filter_pairs(frame, tau)
    filter_pairs_step(pairs=str(path), kept=str(tmp_path / "kept.parquet"), tau=0.5)
    kept, metadata = read_cache(tmp_path / "kept.parquet")
    assert kept["pair_id"].tolist() == ["p2", "p3"]
    assert (metadata["tau"], metadata["n_total"], metadata["n_kept"]) == (0.5, 5, 2)
    assert metadata["backend"] == "test" and metadata["kind"] == "pairs"


def test_merge_caches_checks_shards_and_sums_counts(tmp_path):
    paths = []
    for shard, ids in enumerate([("a", "b"), ("c",)]):
        path = tmp_path / f"points_{shard}.parquet"
        provenance = {"teacher_hash": "abc", "shard": shard, "n_shards": 2, "n_records": 9}
        provenance.update(counts={"n_degenerate": 1, "n_images": len(ids)}, job=f"j{shard}")
        write_points_cache(path, ids, np.zeros((len(ids), 5)), LEVELS, provenance)
        paths.append(str(path))
    merged = tmp_path / "points.parquet"
    merge_caches(paths[::-1], merged, "points")
    frame, metadata = read_cache(merged)
    assert frame["image_id"].tolist() == ["a", "b", "c"]
    assert metadata["counts"] == {"n_degenerate": 2, "n_images": 3}
    assert metadata["n_shards"] == 2 and metadata["n_records"] == 9 and "shard" not in metadata
    assert metadata["per_shard"] == [{"job": "j0"}, {"job": "j1"}]
    with pytest.raises(ValueError, match="shards 0..0 of 1"):
        merge_caches(paths[:1], merged, "points")
    with pytest.raises(ValueError, match="expected a pairs cache"):
        merge_caches(paths, merged, "pairs")


# --- teacher hash and factory -----------------------------------------------------------------


def test_teacher_hash_is_stable_and_ignores_non_judgment_settings():
    reference = teacher_hash(BRISQUE_CFG)
    assert len(reference) == 12 and int(reference, 16) >= 0
    assert reference == teacher_hash(json.loads(json.dumps(BRISQUE_CFG)))
    assert teacher_hash(judgment_config(BRISQUE_CFG)) == reference
    unchanged = {
        **BRISQUE_CFG,
        "tau": 0.9,
        "shards": 8,
        "import": {"path": "x.json"},
        "brisque": {**BRISQUE_CFG["brisque"], "workers": 4},
    }
    assert teacher_hash(unchanged) == reference
    assert "tau" not in judgment_config(unchanged) and "import" not in judgment_config(unchanged)
    changed = [
        {**BRISQUE_CFG, "brisque": {**BRISQUE_CFG["brisque"], "sigma": 1.0}},
        {**BRISQUE_CFG, "levels": {"words": ["Good", "Bad"], "values": [1, 0]}},
        {**BRISQUE_CFG, "prompts": {"point": "How is the quality?"}},
        {**BRISQUE_CFG, "backend": "import", "import": {"path": "x.json"}},
    ]
    assert len({reference, *map(teacher_hash, changed)}) == len(changed) + 1


def test_make_backend_dispatch():
    assert isinstance(make_backend(BRISQUE_CFG), BrisqueTeacher)
    assert make_backend(BRISQUE_CFG).sigma == 0.75
    qbench = "tests/fixtures/qbench/two_levels.json"
    imported = make_backend(
        {
            "backend": "import",
            "levels": {"words": ["good", "poor"], "values": [1, 0]},
            "import": {"path": qbench},
        }
    )
    assert isinstance(imported, ImportedTeacher) and imported.point_only
    with pytest.raises(ValueError, match="unknown teacher backend"):
        make_backend({**BRISQUE_CFG, "backend": "gpt"})


def test_missing_mllm_backend_module_gives_a_clear_error(monkeypatch):
    from leaf.teacher import factory

    monkeypatch.setitem(factory.LAZY_BACKENDS, "vllm", ("leaf.teacher.no_such_module", "X"))
    with pytest.raises(ImportError, match="leaf.teacher.no_such_module.X"):
        make_backend({**BRISQUE_CFG, "backend": "vllm", "vllm": {"model": "m"}})


# --- steps ------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_dataset(tmp_path):
    """Six small textured images (one constant), a manifest and five pairs."""
    rng = np.random.default_rng(0)
    ids, paths = [], []
    for i in range(6):
        x = np.linspace(0, 1, 48)
        base = np.outer(np.sin(6 * x * (i + 1)), np.cos(4 * x)) * 100 + 128
        noisy = base + rng.normal(scale=4 * i, size=base.shape)
        pixels = np.full((48, 48), 90.0) if i == 5 else noisy
        rgb = np.repeat(np.clip(pixels, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        ids.append(f"img{i}.png")
        paths.append(str(tmp_path / ids[-1]))
        Image.fromarray(rgb).save(paths[-1])
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"image_id": ids, "path": paths, "mos": np.arange(6.0)}).to_parquet(manifest)
    pairs = tmp_path / "pairs.parquet"
    pd.DataFrame({"pair_id": range(5), "image_a": ids[:5], "image_b": ids[1:]}).to_parquet(pairs)
    return {"manifest": str(manifest), "pairs": str(pairs), "dir": tmp_path, "ids": ids}


def test_teacher_steps_with_shards_equal_one_shot(tiny_dataset, caplog):
    data, out = tiny_dataset, tiny_dataset["dir"] / "out"
    teacher = judgment_config(BRISQUE_CFG)
    teacher_point_step(manifest=data["manifest"], points=str(out / "one.parquet"), teacher=teacher)
    shards = [str(out / f"points_{k}-of-2.parquet") for k in range(2)]
    with caplog.at_level(logging.WARNING):
        for k, shard in enumerate(shards):
            teacher_point_step(
                manifest=data["manifest"], points=shard, teacher=teacher, shard=k, n_shards=2
            )
    assert "1 of 3 images are (near-)constant" in caplog.text
    merge_points_step(shards=shards, merged=str(out / "points.parquet"))
    one, one_meta = read_cache(out / "one.parquet")
    merged, merged_meta = read_cache(out / "points.parquet")
    pd.testing.assert_frame_equal(one, merged)
    assert merged["image_id"].tolist() == data["ids"]
    assert merged.loc[5, "score"] == pytest.approx(3.0)  # constant image: no opinion
    assert one_meta["counts"] == merged_meta["counts"] == {"n_degenerate": 1, "n_images": 6}
    assert merged_meta["teacher_hash"] == teacher_hash(BRISQUE_CFG)
    assert merged_meta["point_only"] is False and len(merged_meta["manifest_sha256"]) == 64

    pair_shards = [str(out / f"pairs_{k}-of-2.parquet") for k in range(2)]
    for k, shard in enumerate(pair_shards):
        teacher_pair_step(
            manifest=data["manifest"],
            pairs=data["pairs"],
            teacher_pairs=shard,
            teacher=teacher,
            shard=k,
            n_shards=2,
        )
    merge_pairs_step(shards=pair_shards, merged=str(out / "pairs_all.parquet"))
    pairs, pairs_meta = read_cache(out / "pairs_all.parquet")
    assert pairs["pair_id"].tolist() == list(range(5))
    assert pairs.loc[4, "p_A"] == 0.5 and pairs.loc[4, "omega"] == 0.0  # involves img5
    assert pairs_meta["levels"]["words"] == list(LEVELS.words)
    # the preference agrees with the point scores
    score = merged.set_index("image_id")["score"]
    first = pairs.index[:4]
    expected = (
        score[pairs.loc[first, "image_a"]].to_numpy()
        >= score[pairs.loc[first, "image_b"]].to_numpy()
    )
    assert pairs.loc[first, "t_ab"].to_numpy().astype(bool).tolist() == expected.tolist()


def test_point_only_teacher_writes_an_empty_pairs_cache(tmp_path):
    manifest = tmp_path / "manifest.parquet"
    ids = ["gen_a_000.jpg", "gen_b_000.jpg"]
    pd.DataFrame({"image_id": ids, "path": [f"/data/{i}" for i in ids]}).to_parquet(manifest)
    pairs = tmp_path / "pairs.parquet"
    pd.DataFrame({"pair_id": [0], "image_a": ids[:1], "image_b": ids[1:]}).to_parquet(pairs)
    teacher = {
        "backend": "import",
        "levels": {"words": ["good", "poor"], "values": [1, 0]},
        "import": {"path": "tests/fixtures/qbench/two_levels.json"},
    }
    out = tmp_path / "teacher_pairs.parquet"
    teacher_pair_step(
        manifest=str(manifest), pairs=str(pairs), teacher_pairs=str(out), teacher=teacher
    )
    frame, metadata = read_cache(out)
    assert frame.empty and metadata["point_only"] is True and metadata["backend"] == "import"
    filter_pairs_step(pairs=str(out), kept=str(tmp_path / "kept.parquet"), tau=0.5)
    kept, kept_meta = read_cache(tmp_path / "kept.parquet")
    assert kept.empty and kept_meta["point_only"] is True and kept_meta["n_total"] == 0


def test_pairs_step_rejects_unknown_images(tiny_dataset):
    data = tiny_dataset
    pd.DataFrame({"pair_id": [0], "image_a": ["img0.png"], "image_b": ["ghost.png"]}).to_parquet(
        data["pairs"]
    )
    with pytest.raises(ValueError, match="ghost.png"):
        teacher_pair_step(
            manifest=data["manifest"],
            pairs=data["pairs"],
            teacher_pairs=str(data["dir"] / "x.parquet"),
            teacher=judgment_config(BRISQUE_CFG),
        )


VLLM_CFG = {
    "backend": "vllm",
    "levels": {"words": ["good", "poor"], "values": [1, 0]},
    "vllm": {"preset": "qwen3_vl_8b"},
}
SPEED_CHANGES = {
    "max_num_seqs": 8,
    "batch_size": 16,
    "gpu_memory_utilization": 0.5,
    "tensor_parallel_size": 4,
    "enforce_eager": True,
    "kv_cache_memory_bytes": 1 << 30,
    "distributed_executor_backend": "mp",
    "max_model_len": 16384,
}
JUDGMENT_CHANGES = {
    "revision": "0123abc",
    "dtype": "float16",
    "max_pixels": 640 * 32 * 32,
    "min_pixels": 32 * 32 * 32,
    "mm_processor_kwargs": {"max_patches": 6},
    "logprob_mode": "allowed_token_ids",
    "model": "Qwen/Qwen3-VL-32B-Instruct",
}


def _with_vllm(change: dict) -> dict:
    return {**VLLM_CFG, "vllm": {**VLLM_CFG["vllm"], **change}}


@pytest.mark.parametrize(("option", "value"), sorted(SPEED_CHANGES.items()))
def test_teacher_hash_ignores_speed_and_placement(option, value):
    """Moving to another GPU (memory, parallelism, batch sizes) keeps the cache; the speed
    options are no rule param either (judgment_config leaves them out)."""
    assert teacher_hash(_with_vllm({option: value})) == teacher_hash(VLLM_CFG)
    assert option not in judgment_config(_with_vllm({option: value}))["vllm"]
    assert speed_options(_with_vllm({option: value})) == {option: value}


@pytest.mark.parametrize(("option", "value"), sorted(JUDGMENT_CHANGES.items()))
def test_teacher_hash_follows_what_defines_the_judgments(option, value):
    assert teacher_hash(_with_vllm({option: value})) != teacher_hash(VLLM_CFG)


def test_teacher_hash_follows_the_presets_content(monkeypatch):
    """A preset is hashed by its resolved content: editing it recomputes the cache, and spelling
    its content out instead of naming it keeps the cache."""
    from leaf.teacher import presets

    reference = teacher_hash(VLLM_CFG)
    spelled_out = {**VLLM_CFG, "vllm": presets.preset("qwen3_vl_8b")}
    assert teacher_hash(spelled_out) == reference
    edited = {**presets.PRESETS["qwen3_vl_8b"], "max_pixels": 512 * 32 * 32}
    monkeypatch.setitem(presets.PRESETS, "qwen3_vl_8b", edited)
    assert teacher_hash(VLLM_CFG) != reference
