"""Imported teacher judgments: Q-Bench JSON and generic tables, never reading gt_score."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from leaf.teacher.backend import Levels, TeacherOutputError
from leaf.teacher.cache import read_cache
from leaf.teacher.factory import make_backend
from leaf.teacher.import_backend import (
    ImportedEnsemble,
    ImportedTeacher,
    PointOnlyTeacherError,
    read_qbench_json,
)
from leaf.teacher.steps import teacher_points_step

FIXTURES = Path(__file__).parent / "fixtures" / "qbench"
TWO_LEVELS = FIXTURES / "two_levels.json"
THREE_LEVELS = FIXTURES / "three_levels.json"
GOOD_POOR = Levels(("good", "poor"), (1.0, 0.0))
SHARED = Path(__file__).resolve().parents[2] / "shared"
AGIQA = SHARED / "datasets" / "agiqa3k"
QBENCH = SHARED / "teachers" / "qbench-agiqa3k"


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
        teacher_points_step(manifest=str(manifest), points=str(out), teacher=teacher)
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
    teacher_points_step(manifest=str(manifest), points=str(points), teacher=teacher)
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
