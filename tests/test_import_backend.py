"""Imported teacher judgments: Q-Bench JSON, generic tables and logits JSON arrays, never
reading gt_score (nor pred_mos)."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from leaf.teacher.backend import TeacherOutputError
from leaf.teacher.cache import read_cache
from leaf.teacher.factory import make_backend
from leaf.teacher.import_backend import (
    ImportedEnsemble,
    ImportedTeacher,
    PointOnlyTeacherError,
    read_logits_json,
    read_qbench_json,
)
from leaf.teacher.levels import Levels
from leaf.teacher.steps import teacher_point_step

FIXTURES = Path(__file__).parent / "fixtures" / "qbench"
TWO_LEVELS = FIXTURES / "two_levels.json"
THREE_LEVELS = FIXTURES / "three_levels.json"
GOOD_POOR = Levels(("good", "poor"), (1.0, 0.0))
SHARED = Path(__file__).resolve().parents[2] / "shared"
AGIQA = SHARED / "datasets" / "agiqa3k"
QBENCH = SHARED / "teachers" / "qbench-agiqa3k"
QALIGN = SHARED / "teachers" / "qalign5-agiqa3k"
FIVE_WORDS = ("excellent", "good", "fair", "poor", "bad")
FIVE_LEVELS = Levels(FIVE_WORDS, (5.0, 4.0, 3.0, 2.0, 1.0))


def _fixture_records(path: Path) -> list[dict]:
    """The fixture's records, decoded independently of the importer (one object per '}')."""
    text = path.read_text().replace("}", "}\n")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _image_paths(names, root="/data/agiqa3k/images"):
    return [f"{root}/{name}" for name in names]


def test_qbench_records_are_decoded_and_gt_score_is_dropped():
    frame = read_qbench_json(TWO_LEVELS)
    records = _fixture_records(TWO_LEVELS)
    assert len(frame) == len(records) == 6
    assert list(frame.columns) == ["img_path", "logit_good", "logit_poor"]
    assert frame["logit_good"].tolist() == [r["logit_good"] for r in records]


def test_point_logliks_follow_the_paths_and_the_level_order():
    teacher = ImportedTeacher(Levels(("Poor", "Good"), (0.0, 1.0)), str(TWO_LEVELS))
    names = ["gen_c_000.jpg", "gen_a_000.jpg"]
    logliks = teacher.point_logliks(_image_paths(names))
    by_name = {r["img_path"]: r for r in _fixture_records(TWO_LEVELS)}
    assert logliks.tolist() == [[by_name[n]["logit_poor"], by_name[n]["logit_good"]] for n in names]


def test_changing_gt_score_changes_nothing(tmp_path):
    """The cache built from a copy whose gt_score values differ is identical (bar created_at)."""
    changed = tmp_path / "changed.json"
    text = TWO_LEVELS.read_text()
    changed.write_text(text.replace('"gt_score": "', '"gt_score": "9'))
    assert changed.read_text() != text
    names = [r["img_path"] for r in _fixture_records(TWO_LEVELS)]
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"image_id": names, "path": _image_paths(names)}).to_parquet(manifest)
    caches = []
    for source in (TWO_LEVELS, changed):
        local = tmp_path / "teacher.json"
        shutil.copyfile(source, local)  # same path: the provenance must not depend on gt_score
        teacher = {
            "backend": "import",
            "levels": {"words": ["Good", "Poor"], "values": [1, 0]},
            "import": {"path": str(local), "format": "qbench"},
        }
        out = tmp_path / f"points_{len(caches)}.parquet"
        teacher_point_step(manifest=str(manifest), points=str(out), teacher=teacher)
        caches.append(read_cache(out))
    (first, first_meta), (second, second_meta) = caches
    pd.testing.assert_frame_equal(first, second)
    first_meta.pop("created_at"), second_meta.pop("created_at")
    assert first_meta == second_meta
    assert first_meta["point_only"] is True and '"gt_score"' not in json.dumps(first_meta)


def test_three_words_and_case_insensitive_match():
    levels = Levels(("Excellent", "GOOD", "poor"), (1.0, 0.5, 0.0))
    teacher = ImportedTeacher(levels, str(THREE_LEVELS))
    logliks = teacher.point_logliks(_image_paths(["gen_b_000.jpg"]))
    assert logliks.tolist() == [[12.5, 12.0, 9.25]]


def test_missing_level_word_names_file_and_word():
    with pytest.raises(ValueError, match=r"two_levels.json.*'Excellent'"):
        ImportedTeacher(Levels(("Excellent", "Good", "Poor"), (1, 0.5, 0)), str(TWO_LEVELS))


def test_unconfigured_word_is_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        teacher = ImportedTeacher(GOOD_POOR, str(THREE_LEVELS))
    assert "ignoring level words ['excellent']" in caplog.text
    assert teacher.provenance()["ignored_words"] == ["excellent"]
    assert teacher.point_logliks(_image_paths(["gen_a_000.jpg"])).tolist() == [[11.375, 13.3125]]


def test_images_missing_from_the_file_are_named():
    teacher = ImportedTeacher(GOOD_POOR, str(TWO_LEVELS))
    with pytest.raises(ValueError, match=r"2 images have no judgment.*ghost_1.jpg.*ghost_2.jpg"):
        teacher.point_logliks(_image_paths(["gen_a_000.jpg", "ghost_1.jpg", "ghost_2.jpg"]))


def test_no_pairs_from_an_import():
    teacher = ImportedTeacher(GOOD_POOR, str(TWO_LEVELS))
    assert teacher.point_only and teacher.provenance()["point_only"] is True
    with pytest.raises(PointOnlyTeacherError, match="point-wise judgments only"):
        teacher.pair_logprobs(["a"], ["b"])
    assert issubclass(PointOnlyTeacherError, NotImplementedError)


def test_malformed_json_and_missing_logits(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"img_path": "a.jpg", "logit_good": 1.0, "logit_poor": 2.0}{"img_path": ')
    with pytest.raises(ValueError, match="cannot decode record 2"):
        ImportedTeacher(GOOD_POOR, str(broken))
    partial = tmp_path / "partial.json"
    partial.write_text(
        '{"img_path": "a.jpg", "logit_good": 1.0, "logit_poor": 2.0}\n'
        '{"img_path": "b.jpg", "logit_good": 1.0}'
    )
    teacher = ImportedTeacher(GOOD_POOR, str(partial))
    with pytest.raises(TeacherOutputError, match=r"'b.jpg', level word 'poor'"):
        teacher.point_logliks(["x/a.jpg", "x/b.jpg"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_generic_table_import_reads_only_image_and_logit_columns(tmp_path, suffix):
    table = pd.DataFrame(
        {
            "image_id": ["sub/a.png", "a.png"],
            "mos": [1.0, 2.0],
            "logit_Good": [0.5, 1.5],
            "logit_Poor": [0.0, -1.0],
        }
    )
    path = tmp_path / f"judgments{suffix}"
    table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    teacher = ImportedTeacher(GOOD_POOR, str(path))
    assert teacher.format == "table" and "mos" not in teacher.logits.columns
    # the longest matching key wins: root/sub/a.png is "sub/a.png", root/a.png is "a.png"
    logliks = teacher.point_logliks(["/root/sub/a.png", "/root/a.png"])
    assert logliks.tolist() == [[0.5, 0.0], [1.5, -1.0]]
    renamed = tmp_path / f"renamed{suffix}"
    table = table.rename(columns={"image_id": "file"})
    table.to_csv(renamed, index=False) if suffix == ".csv" else table.to_parquet(renamed)
    with pytest.raises(ValueError, match="no image field 'image_id'"):
        ImportedTeacher(GOOD_POOR, str(renamed))
    assert len(ImportedTeacher(GOOD_POOR, str(renamed), image_column="file").logits) == 2


@pytest.mark.realdata
@pytest.mark.skipif(not QBENCH.exists() or not AGIQA.exists(), reason="../shared is absent")
def test_mplug_owl_import_reaches_the_published_srcc(tmp_path):
    labels = pd.read_csv(AGIQA / "data.csv", usecols=["name", "mos_quality"])
    manifest = tmp_path / "manifest.parquet"
    paths = [str(AGIQA / "images" / name) for name in labels["name"]]
    pd.DataFrame({"image_id": labels["name"], "path": paths}).to_parquet(manifest)
    teacher = {
        "backend": "import",
        "levels": {"words": ["good", "poor"], "values": [1, 0]},
        "import": {"path": str(QBENCH / "mplug_owl.json")},
    }
    points = tmp_path / "points.parquet"
    teacher_point_step(manifest=str(manifest), points=str(points), teacher=teacher)
    cache, _ = read_cache(points)
    assert len(cache) == len(labels) == 2982
    joined = cache.merge(labels, left_on="image_id", right_on="name")
    srcc = spearmanr(joined["score"], joined["mos_quality"]).statistic
    assert srcc == pytest.approx(0.687, abs=0.01)
    assert np.all((cache["score"] >= 0) & (cache["score"] <= 1))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def test_ensemble_mixes_the_members_level_probabilities():
    # The images both fixture files judge.
    names = sorted(
        {r["img_path"] for r in _fixture_records(TWO_LEVELS)}
        & {r["img_path"] for r in _fixture_records(THREE_LEVELS)}
    )
    assert len(names) >= 2
    paths = _image_paths(names)
    ensemble = make_backend(
        {
            "backend": "import",
            "levels": {"words": ["good", "poor"], "values": [1, 0]},
            "import": {"path": [str(TWO_LEVELS), str(THREE_LEVELS)]},
        }
    )
    assert isinstance(ensemble, ImportedEnsemble) and ensemble.point_only
    members = [ImportedTeacher(GOOD_POOR, str(p)) for p in (TWO_LEVELS, THREE_LEVELS)]
    expected = np.mean([_softmax(m.point_logliks(paths)) for m in members], axis=0)
    mixed = np.exp(ensemble.point_logliks(paths))
    np.testing.assert_allclose(mixed, expected, rtol=1e-12)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0)
    # The score (v = 1, 0) is the mean of the members' p(good); it differs from each member's.
    score = mixed[:, 0]
    member_scores = [_softmax(m.point_logliks(paths))[:, 0] for m in members]
    np.testing.assert_allclose(score, np.mean(member_scores, axis=0))
    assert not any(np.allclose(score, s) for s in member_scores)
    provenance = ensemble.provenance()
    assert [m["source_path"] for m in provenance["members"]] == [str(TWO_LEVELS), str(THREE_LEVELS)]
    with pytest.raises(PointOnlyTeacherError):
        ensemble.pair_logprobs(paths[:1], paths[1:2])


def test_ensemble_needs_two_files_and_names_a_missing_image():
    with pytest.raises(ValueError, match="at least two files"):
        ImportedEnsemble(GOOD_POOR, [str(TWO_LEVELS)])
    ensemble = ImportedEnsemble(GOOD_POOR, [str(TWO_LEVELS), str(THREE_LEVELS)])
    with pytest.raises(ValueError, match="no judgment in the file.*nowhere.jpg"):
        ensemble.point_logliks(_image_paths(["gen_a_000.jpg", "nowhere.jpg"]))


def _logits_record(name: str, logits: dict, pred_mos=None) -> dict:
    record = {"filename": name, "logits": logits}
    if pred_mos is not None:
        record["pred_mos"] = pred_mos
    return record


def _write_logits_json(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def _five(values, extra=None) -> dict:
    logits = {f" {w}": float(v) for w, v in zip(FIVE_WORDS, values, strict=True)}
    return {**logits, **(extra or {})}


@pytest.fixture
def logits_file(tmp_path):
    rng = np.random.default_rng(0)
    records = [
        _logits_record(
            f"gen_{i}.jpg",
            _five(rng.normal(10, 3, 5), {" high": 30.0, " low": -4.0, " medium": 1.5}),
            pred_mos="garbage" if i % 2 else 1e9,  # never read: any value, any type
        )
        for i in range(5)
    ]
    return _write_logits_json(tmp_path / "teacher.json", records), records


def test_logits_json_score_is_recomputed_from_the_logits(logits_file, tmp_path):
    path, records = logits_file
    frame = read_logits_json(path)
    assert list(frame.columns) == ["filename"] + [f"logit_{w}" for w in FIVE_WORDS] + [
        "logit_high",
        "logit_low",
        "logit_medium",
    ]
    names = [r["filename"] for r in records]
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"image_id": names, "path": _image_paths(names)}).to_parquet(manifest)
    teacher = {
        "backend": "import",
        "levels": {"words": list(FIVE_WORDS), "values": [5, 4, 3, 2, 1]},
        "import": {"path": str(path), "format": "logits_json"},
    }
    points = tmp_path / "points.parquet"
    teacher_point_step(manifest=str(manifest), points=str(points), teacher=teacher)
    cache, meta = read_cache(points)
    logits = np.array([[r["logits"][f" {w}"] for w in FIVE_WORDS] for r in records])
    expected = _softmax(logits) @ np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    np.testing.assert_allclose(cache.set_index("image_id").loc[names, "score"], expected)
    assert "pred_mos" not in json.dumps(meta) and "garbage" not in json.dumps(meta)


def test_logits_json_keeps_only_filename_and_logits(logits_file, tmp_path):
    path, records = logits_file
    teacher = ImportedTeacher(FIVE_LEVELS, str(path), format="logits_json")
    assert teacher.image_column == "filename"
    assert list(teacher.logits.columns) == list(FIVE_WORDS)
    assert teacher.provenance()["ignored_words"] == ["high", "low", "medium"]
    # Changing pred_mos changes nothing that is kept.
    changed = [{**r, "pred_mos": -7.0} for r in records]
    other = ImportedTeacher(
        FIVE_LEVELS, str(_write_logits_json(tmp_path / "other.json", changed)), "logits_json"
    )
    assert other.content_sha256() == teacher.content_sha256()


def test_logits_json_matches_words_case_insensitively_without_spaces(tmp_path):
    record = _logits_record(
        "a.jpg", {" Excellent": 1.0, "GOOD": 2.0, " fair ": 3.0, " Poor": 4.0, " bad": 5.0}
    )
    path = _write_logits_json(tmp_path / "mixed.json", [record])
    teacher = ImportedTeacher(Levels(("Bad", "Excellent"), (0.0, 1.0)), str(path), "logits_json")
    assert teacher.point_logliks(["x/a.jpg"]).tolist() == [[5.0, 1.0]]
    assert teacher.point_logliks(["x/a.jpg"]).shape == (1, 2)


def test_logits_json_missing_level_word_names_file_and_word(tmp_path):
    records = [
        _logits_record("a.jpg", {" excellent": 1.0, " good": 2.0, " poor": 4.0, " bad": 0.0})
    ]
    path = _write_logits_json(tmp_path / "no_fair.json", records)
    with pytest.raises(ValueError, match=r"no_fair.json: level word 'fair' has no 'fair' key"):
        ImportedTeacher(FIVE_LEVELS, str(path), format="logits_json")
    # A word missing in one record only: the image and the word are named when it is used.
    records = [
        _logits_record("a.jpg", _five([1, 2, 3, 4, 5])),
        _logits_record("b.jpg", {" excellent": 1.0, " good": 2.0, " poor": 4.0, " bad": 0.0}),
    ]
    teacher = ImportedTeacher(
        FIVE_LEVELS, str(_write_logits_json(tmp_path / "partial.json", records)), "logits_json"
    )
    with pytest.raises(TeacherOutputError, match=r"partial.json.*'b.jpg', level word 'fair'"):
        teacher.point_logliks(["x/a.jpg", "x/b.jpg"])


def test_logits_json_rejects_malformed_files(tmp_path):
    not_array = _write_logits_json(tmp_path / "object.json", {"filename": "a.jpg"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one JSON array"):
        read_logits_json(not_array)
    no_name = _write_logits_json(tmp_path / "no_name.json", [{"logits": _five([1] * 5)}])
    with pytest.raises(ValueError, match="record 1 has no 'filename' field"):
        read_logits_json(no_name)
    no_logits = _write_logits_json(tmp_path / "no_logits.json", [{"filename": "a.jpg"}])
    with pytest.raises(ValueError, match="record 1 has no 'logits' object"):
        read_logits_json(no_logits)
    twice = _write_logits_json(
        tmp_path / "twice.json", [_logits_record("a.jpg", {" good": 1.0, "Good": 2.0})]
    )
    with pytest.raises(ValueError, match="word 'good' twice"):
        read_logits_json(twice)
    (tmp_path / "cut.json").write_text('[{"filename": "a.jpg", "logits": {')
    with pytest.raises(ValueError, match="cut.json: not valid JSON"):
        read_logits_json(tmp_path / "cut.json")


def test_logits_json_ensemble_mixes_the_members(tmp_path):
    rng = np.random.default_rng(1)
    names = [f"img_{i}.jpg" for i in range(4)]
    files = [
        _write_logits_json(
            tmp_path / f"member{m}.json",
            [_logits_record(n, _five(rng.normal(0, 2, 5)), pred_mos=0.0) for n in names],
        )
        for m in range(2)
    ]
    ensemble = make_backend(
        {
            "backend": "import",
            "levels": {"words": list(FIVE_WORDS), "values": [5, 4, 3, 2, 1]},
            "import": {"path": [str(f) for f in files], "format": "logits_json"},
        }
    )
    assert isinstance(ensemble, ImportedEnsemble)
    paths = _image_paths(names)
    members = [ImportedTeacher(FIVE_LEVELS, str(f), "logits_json") for f in files]
    expected = np.mean([_softmax(m.point_logliks(paths)) for m in members], axis=0)
    np.testing.assert_allclose(np.exp(ensemble.point_logliks(paths)), expected, rtol=1e-12)


@pytest.mark.realdata
@pytest.mark.skipif(not QALIGN.exists() or not AGIQA.exists(), reason="../shared is absent")
@pytest.mark.parametrize("file", ["qwen2_vl_7b.json", "llava_onevision_7b.json"])
def test_qalign_logits_import_matches_the_publishers_expectation(file):
    """Both five-level files: every AGIQA-3K image, finite scores, and the recomputed score
    equals the file's pred_mos up to its half-precision rounding (the publisher's expectation of
    the same logits, read here independently: a consistency check of the importer; pred_mos is
    not a label)."""
    names = pd.read_csv(AGIQA / "data.csv", usecols=["name"])["name"].tolist()
    teacher = ImportedTeacher(FIVE_LEVELS, str(QALIGN / file), format="logits_json")
    logliks = teacher.point_logliks(_image_paths(names))
    assert logliks.shape == (len(names), 5) == (2982, 5)
    scores = _softmax(logliks) @ np.array(FIVE_LEVELS.values)
    assert np.isfinite(scores).all() and ((scores >= 1) & (scores <= 5)).all()
    published = {r["filename"]: r["pred_mos"] for r in json.loads((QALIGN / file).read_text())}
    expected = np.array([published[n] for n in names], dtype=np.float64)
    # The publisher computed pred_mos in half precision (Qwen2-VL's values are all bfloat16
    # numbers, LLaVA-OV's float16 ones), so 1e-4 is out of reach: allow 1.5 bfloat16 steps
    # (8 significant bits: 2**(exponent - 7), i.e. 0.016..0.047 for scores in [2, 8)) per
    # image, and ask for near-identity on average and in rank.
    bf16_step = 2.0 ** (np.floor(np.log2(np.abs(expected))) - 7)
    assert np.all(np.abs(scores - expected) <= 1.5 * bf16_step)
    assert np.mean(np.abs(scores - expected)) < 0.01
    assert spearmanr(scores, expected).statistic > 0.999


# --- judgment files written on other systems (field-tested cases) ----------------------------


def _qbench_text(records: list[dict]) -> str:
    return "".join(json.dumps(record) for record in records)


def test_windows_separators_bom_and_json_array_are_read(tmp_path):
    """A Q-Bench file with `images\\x.jpg` keys, a UTF-8 BOM, or a JSON array judges like the
    original file."""
    records = _fixture_records(TWO_LEVELS)
    names = [Path(r["img_path"]).name for r in records]
    paths = _image_paths(names)
    reference = ImportedTeacher(GOOD_POOR, str(TWO_LEVELS)).point_logliks(paths)
    windows = [{**r, "img_path": "images\\" + Path(r["img_path"]).name} for r in records]
    variants = {
        "windows.json": _qbench_text(windows),
        "bom.json": "\ufeff" + TWO_LEVELS.read_text(),
        "array.json": json.dumps(records),
        "array_bom_windows.json": "\ufeff" + json.dumps(windows),
    }
    for name, text in variants.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        teacher = ImportedTeacher(GOOD_POOR, str(path), format="qbench")
        np.testing.assert_array_equal(teacher.point_logliks(paths), reference, err_msg=name)


def test_a_mismatch_shows_the_files_keys_next_to_our_paths():
    teacher = ImportedTeacher(GOOD_POOR, str(TWO_LEVELS))
    with pytest.raises(ValueError) as error:
        teacher.point_logliks(["/elsewhere/renamed_1.png"])
    message = str(error.value)
    assert "renamed_1.png" in message and "image keys look like" in message
    assert str(teacher.logits.index[0]) in message
