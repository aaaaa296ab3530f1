"""leaf.experiments: distill variants, configured teachers, and the rows of every table/figure."""

from __future__ import annotations

import copy

import pytest
import yaml
from workflow_helpers import ROOT

from leaf.config_checks import ConfigError
from leaf.experiments import (
    ABLATION_ROWS,
    Plan,
    configured_teachers,
    variant_flags,
    variant_name,
)


@pytest.fixture()
def demo_config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("flags", "name"),
    [
        ((True, True, True), "point-pair-conf"),
        ((True, True, False), "point-pair"),
        ((True, False, False), "point"),
        ((False, True, True), "pair-conf"),
        ((False, True, False), "pair"),
    ],
)
def test_variant_names_round_trip(flags, name):
    as_dict = dict(zip(("use_point", "use_pair", "use_omega"), flags, strict=True))
    assert variant_name(as_dict) == name
    assert variant_flags(name) == as_dict


def test_omega_without_pairs_is_the_point_variant():
    assert variant_name({"use_point": True, "use_pair": False, "use_omega": True}) == "point"


@pytest.mark.parametrize("bad", ["", "conf", "pair-point", "point-conf", "point-pair-x"])
def test_bad_variant_names_are_rejected(bad):
    with pytest.raises(ValueError, match="not a distill variant"):
        variant_flags(bad)


def test_nothing_to_distill_is_a_config_error():
    with pytest.raises(ConfigError, match="use_point and use_pair are both false"):
        variant_name({"use_point": False, "use_pair": False})


def test_teachers_are_named_and_hashed_apart(demo_config):
    teachers = configured_teachers(demo_config)
    assert list(teachers) == ["BRISQUE", "BRISQUE-sharp"]
    assert teachers["BRISQUE"].hash != teachers["BRISQUE-sharp"].hash
    # The name is a label, not part of what the teacher judges.
    renamed = copy.deepcopy(demo_config)
    renamed["teacher"]["name"] = "other"
    assert configured_teachers(renamed)["other"].hash == teachers["BRISQUE"].hash


def test_a_teacher_listed_twice_is_an_error(demo_config):
    demo_config["extra_teachers"]["copy"] = copy.deepcopy(demo_config["teacher"])
    del demo_config["extra_teachers"]["copy"]["name"]
    with pytest.raises(ConfigError, match="extra_teachers.copy judges exactly like teacher"):
        configured_teachers(demo_config)


def test_aigc_comparison_rows_cover_teacher_leaf_and_cft(demo_config):
    plan = Plan(demo_config)
    rows = plan.table_rows("aigc_comparison")
    settings = [row["setting"] for _, row in rows]
    n_seeds, ratios = len(demo_config["seeds"]), demo_config["calibration"]["ratios"]
    assert settings.count("teacher zero-shot") == 1
    assert sum(s == "label-free" for s in settings) == n_seeds
    assert sum(s.startswith("CFT-only") for s in settings) == n_seeds * (len(ratios) - 1)
    assert len(rows) == 1 + n_seeds * len(ratios) + n_seeds * (len(ratios) - 1)
    leaf_file = next(path for path, row in rows if row["setting"] == "10% MOS")
    assert f"/eval/tf_efficientnet_lite0/{plan.teacher.hash}/point-pair-conf/" in leaf_file
    assert leaf_file.endswith("_ratio0.1.json")


def test_stage1_ablation_has_the_five_rows_on_distinct_files(demo_config):
    rows = Plan(demo_config).table_rows("stage1_ablation")
    names = list(dict.fromkeys(row["setting"] for _, row in rows))
    assert names == ["CFT-only", *(name for name, _ in ABLATION_ROWS)]
    files = [path for path, _ in rows]
    assert len(set(files)) == len(files)
    assert {row["ratio"] for _, row in rows} == {0.1}


def test_stage1_ablation_needs_pair_judgments(demo_config):
    demo_config["teacher"] = {
        "backend": "import",
        "levels": {"words": ["good", "poor"], "values": [1, 0]},
        "tau": 0.1,
        "import": {"path": "x.json"},
    }
    with pytest.raises(ConfigError, match="point-only"):
        Plan(demo_config).table_rows("stage1_ablation")


def test_teacher_backbone_grid_crosses_teachers_and_backbones(demo_config):
    plan = Plan(demo_config)
    rows = plan.table_rows("teacher_backbone_grid")
    cells = {(row["teacher"], row["backbone"]) for _, row in rows if row["backbone"]}
    assert cells == {
        (teacher, backbone)
        for teacher in ("BRISQUE", "BRISQUE-sharp")
        for backbone in ("tf_efficientnet_lite0", "tf_efficientnet_lite1")
    }
    zero_shot = [row["teacher"] for _, row in rows if row["setting"] == "teacher zero-shot"]
    assert zero_shot == ["BRISQUE", "BRISQUE-sharp"]


def test_grid_unknown_teacher_is_named(demo_config):
    demo_config["tables"]["teacher_backbone_grid"]["teachers"] = ["BRISQUE", "InternVL"]
    with pytest.raises(
        ConfigError, match="tables.teacher_backbone_grid.teachers names the teacher 'InternVL'"
    ):
        Plan(demo_config).table_rows("teacher_backbone_grid")


@pytest.mark.parametrize(
    ("target", "file"),
    [
        ("ugc_comparison", "table2"),
        ("stage1_ablation", "table3"),
        ("teacher_backbone_grid", "table4"),
        ("teacher_vs_mos", "fig2"),
        ("mos_ratio_curve", "fig4"),
    ],
)
def test_requesting_an_unconfigured_target_names_the_key(demo_config, target, file):
    demo_config["tables"][target] = None
    plan = Plan(demo_config)
    message = rf"results/{file} was requested but `tables.{target}` is not in the config"
    with pytest.raises(ConfigError, match=message):
        if file.startswith("table"):
            plan.table_rows(target)
        elif target == "teacher_vs_mos":
            plan.fig2_spec()
        else:
            plan.fig4_rows()
    assert not any(f"/{file}." in path for path in plan.configured_targets())


def test_all_ratios_include_every_configured_target(demo_config):
    plan = Plan(demo_config)
    assert plan.all_ratios() == [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
    demo_config["tables"]["mos_ratio_curve"] = None
    assert Plan(demo_config).all_ratios() == [0.0, 0.1, 0.3]


def test_fig4_rows_span_the_ratios_with_cft_above_zero(demo_config):
    dataset, leaf_rows, cft_rows = Plan(demo_config).fig4_rows()
    assert dataset == "demo"
    ratios = demo_config["tables"]["mos_ratio_curve"]["ratios"]
    assert len(leaf_rows) == len(ratios) * len(demo_config["seeds"])
    assert {row["ratio"] for _, row in cft_rows} == {r for r in ratios if r > 0}


def test_training_curves_follow_the_benchmark_tables(demo_config):
    plan = Plan(demo_config)
    dataset, runs = plan.training_histories()
    stages = [run["stage"] for _, run in runs]
    assert dataset == "demo" and stages.count("distill") == len(plan.seeds)
    assert stages.count("calibrate") == len(plan.seeds) * 2  # ratios 0.1 and 0.3
    assert all(path.endswith(".history.csv") for path, _ in runs)
    assert any(path.endswith("training_curves.png") for path in plan.configured_targets())
    # The UGC paper configs have only the UGC comparison (table 2): its first dataset is shown.
    demo_config["tables"]["aigc_comparison"] = None
    demo_config["tables"]["ugc_comparison"]["datasets"] = ["other", "demo"]
    assert Plan(demo_config).training_histories()[0] == "other"
    demo_config["tables"]["ugc_comparison"] = None
    assert not any("training_curves" in path for path in Plan(demo_config).configured_targets())
