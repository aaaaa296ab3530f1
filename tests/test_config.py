"""Config validation: the schema and the cross-reference checks reject malformed configs."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from workflow_helpers import shipped_config_sets

from leaf.config_checks import (
    PAPER_FIGURES,
    PAPER_TABLES,
    ConfigError,
    check_config,
    resolve_table_aliases,
    schema_errors,
)
from leaf.experiments import COMPARISONS, Plan, merged_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
DEMO = ROOT / "config" / "config.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _validated(config):
    """What workflow/rules/common.smk does with the merged config."""
    resolve_table_aliases(config)
    validate(config, SCHEMA)
    check_config(config)


def test_demo_config_is_valid(config):
    _validated(config)


def _set(config, dotted, value):
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return config


DELETE = object()

MALFORMED = [
    ("teacher.tau", 1.5, "tau"),
    ("teacher.tau", -0.1, "tau"),
    ("calibration.ratios", [0.1, 1.3], "ratios"),
    ("calibration.ratios", "0.1", "ratios"),
    ("seeds", ["0", "1"], "seeds"),  # what `--config seeds=[0,1]` delivers
    ("seeds", [], "seeds"),
    ("teacher.backend", "gpt4", "backend"),
    ("teacher.levels.words", ["Good"], "words"),
    ("student.image_size", "224", "image_size"),
    ("distill.lambda_dis", -1, "lambda_dis"),
    ("distill.epochs", 0, "epochs"),
    ("split.test_fraction", 1.0, "test_fraction"),
    ("teacher.unknown_key", 3, "unknown_key"),
    ("calibration.lambda_call", 1.0, "lambda_call"),  # a typo of lambda_cal
    ("datasets.demo.adapter", "imagenet", "adapter"),
    ("datasets.demo.root", DELETE, "root"),
    ("results_dir", DELETE, "results_dir"),
    ("pairs.per_image", -2, "per_image"),
    ("tables.aigc_comparisn", {"datasets": ["demo"]}, "aigc_comparisn"),  # a typo of a key
    ("tables.table5", {"datasets": ["demo"]}, "table5"),  # not an old key either
]


@pytest.mark.parametrize(("key", "value", "named"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_is_rejected_naming_the_key(config, key, value, named):
    bad = _set(copy.deepcopy(config), key, value)
    with pytest.raises(WorkflowError) as err:
        _validated(bad)
    message = str(err.value) + str(err.value.__cause__ or "")
    for arg in getattr(err.value, "args", ()):
        message += str(arg)
    assert named in message


@pytest.mark.parametrize(("key", "value", "named"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_schema_errors_name_the_key_in_one_line(config, key, value, named):
    """The workflow's message for a config the schema rejects (leaf.config_checks.schema_errors):
    a line naming the dotted key, not Snakemake's dump of the schema."""
    assert schema_errors(config, SCHEMA) == []
    lines = schema_errors(_set(copy.deepcopy(config), key, value), SCHEMA)
    assert lines and all(line.startswith("config key `") for line in lines)
    parent = key.rsplit(".", 1)[0] if "." in key else "(top level)"
    keys = {line.split("`")[1] for line in lines}
    assert any(k in (key, parent) or k.startswith(f"{key}.") for k in keys), lines
    assert any(named in line for line in lines), lines


def test_schema_errors_suggest_the_key_meant(config):
    config["calibration"]["ratio"] = config["calibration"].pop("ratios")
    config["seed"] = 0
    lines = schema_errors(config, SCHEMA)
    assert (
        "config key `calibration.ratio` is not known; did you mean `calibration.ratios`?" in lines
    )
    assert any(
        line.startswith("config key `seed` is not known; did you mean `seeds`") for line in lines
    )


def test_table_naming_an_undefined_dataset_is_rejected(config):
    config["tables"]["aigc_comparison"]["datasets"] = ["demo", "koniq"]
    validate(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"tables.aigc_comparison names the dataset 'koniq'"):
        check_config(config)


def test_backend_without_its_section_is_rejected(config):
    config["teacher"]["backend"] = "vllm"
    validate(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"no teacher.vllm section"):
        check_config(config)


def test_every_config_key_is_commented():
    """Each key line of the demo config is preceded by a comment line (or is a list item)."""
    lines = (ROOT / "config" / "config.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or ":" not in stripped:
            continue
        previous = lines[number - 1].strip()
        inline = "#" in line.split(":", 1)[1]
        assert previous.startswith("#") or inline, f"config.yaml line {number + 1} lacks a comment"


def test_unknown_backbone_is_refused_naming_the_key(config):
    """A typo in a backbone name fails when the config is checked (when the workflow is
    parsed), naming the key and how to list valid names, not when its job runs."""
    config["student"]["backbone"] = "not_a_model"
    validate(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"student.backbone: 'not_a_model' is not a timm model"):
        check_config(config)
    config["student"]["backbone"] = "tf_efficientnet_lite0"
    grid = config["tables"]["teacher_backbone_grid"]
    grid["backbones"] = ["tf_efficientnet_lite0", "convnext_bsae"]
    with pytest.raises(
        ConfigError, match=r"tables.teacher_backbone_grid.backbones: 'convnext_bsae'.*list_models"
    ):
        check_config(config)
    grid["backbones"] = ["tf_efficientnet_lite0", "convnext_base"]
    check_config(config)  # a real timm model without packaged weights is fine


@pytest.mark.slow
def test_unknown_backbone_stops_the_dry_run(tmp_path):
    from workflow_helpers import snakemake, write_override

    override = write_override(tmp_path / "o.yaml", {"student": {"backbone": "not_a_model"}})
    result = snakemake(tmp_path, "-n", configfiles=[override], check=False)
    assert result.returncode != 0
    assert "student.backbone: 'not_a_model' is not a timm model" in result.stdout + result.stderr


# The new key of every old `tables` key (table1 -> aigc_comparison, ...).
NEW_KEY = {number: key for key, number in {**PAPER_TABLES, **PAPER_FIGURES}.items()}


def with_old_table_keys(path: Path, folder: Path) -> Path:
    """A copy of the config file ``path`` under ``folder`` whose `tables` entries carry the old
    keys (table1 .. table4, fig2, fig4), as a config written before the rename."""
    config = yaml.safe_load(path.read_text())
    old = {key: number for number, key in NEW_KEY.items()}
    if "tables" in config:
        config["tables"] = {old.get(key, key): value for key, value in config["tables"].items()}
    copy_path = folder / path.parent.name / path.name
    copy_path.parent.mkdir(parents=True, exist_ok=True)
    copy_path.write_text(yaml.safe_dump(config))
    return copy_path


def planned_runs(config: dict) -> str:
    """Everything the Plan derives from the `tables` section: the targets, every table's and
    figure's (metrics file, row) list, the MOS ratios drawn and the training curves."""
    plan = Plan(config)
    summary: dict = {"targets": plan.configured_targets(), "ratios": plan.all_ratios()}
    for key in PAPER_TABLES:
        if key in plan.tables:
            summary[key] = plan.table_rows(key)
    if "mos_ratio_curve" in plan.tables:
        summary["mos_ratio_curve"] = plan.fig4_rows()
    if "teacher_vs_mos" in plan.tables:
        summary["teacher_vs_mos"] = plan.fig2_spec()
    if any(key in plan.tables for key in COMPARISONS):
        summary["curves"] = plan.training_histories()
    return repr(summary)  # repr: the teacher rows' ratio is NaN, which != itself


@pytest.mark.parametrize("name", sorted(shipped_config_sets()))
def test_a_config_with_the_old_table_keys_plans_the_same_runs(name, tmp_path, caplog):
    """Every shipped config, rewritten with the old `tables` keys (the demo: config.yaml
    itself, layered over the new one), plans the same runs, with a warning naming each new key."""
    files = shipped_config_sets()[name] or [DEMO]
    new = merged_config([DEMO, *files])
    old = merged_config([DEMO, *(with_old_table_keys(path, tmp_path) for path in files)])
    assert planned_runs(old) == planned_runs(new)
    renamed = {n for path in files for n in (yaml.safe_load(path.read_text()).get("tables") or {})}
    for key in renamed - {"plcc"}:
        number = {**PAPER_TABLES, **PAPER_FIGURES}[key]
        assert f"tables.{number} is an old name: rename it to tables.{key}" in caplog.text


def test_an_old_key_merges_over_the_new_entry_and_null_switches_it_off(caplog):
    config = yaml.safe_load(DEMO.read_text())
    config["tables"]["table3"] = {"ratio": 0.3}  # a user file's partial entry, old key
    config["tables"]["fig4"] = None
    resolve_table_aliases(config)
    assert config["tables"]["stage1_ablation"] == {"dataset": "demo", "ratio": 0.3}
    assert config["tables"]["mos_ratio_curve"] is None
    assert not {"table3", "fig4"} & set(config["tables"])
    assert "rename it to tables.stage1_ablation (Table 3 of the paper)" in caplog.text
    assert "rename it to tables.mos_ratio_curve (Figure 4 of the paper)" in caplog.text
    _validated(config)


@pytest.mark.slow
def test_old_table_keys_plan_the_same_jobs_in_snakemake(tmp_path):
    """The workflow itself (common.smk) renames old keys before the schema: a dry run with an
    override written in old keys plans the jobs of the same override in new keys, and says so."""
    from workflow_helpers import planned_jobs, snakemake, write_override

    settings = {"stage1_ablation": None, "mos_ratio_curve": {"ratios": [0.0, 0.1]}}
    new = write_override(tmp_path / "new.yaml", {"tables": settings})
    old_settings = {"table3": None, "fig4": {"ratios": [0.0, 0.1]}}
    old = write_override(tmp_path / "old.yaml", {"tables": old_settings})
    jobs = planned_jobs(tmp_path, configfiles=[new])
    assert "results_table" in jobs and jobs["fig4"] == 1
    assert planned_jobs(tmp_path, configfiles=[old]) == jobs
    output = snakemake(tmp_path, "-n", configfiles=[old])
    text = output.stdout + output.stderr
    assert "tables.table3 is an old name: rename it to tables.stage1_ablation" in text
