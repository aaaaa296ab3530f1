"""Config validation: the schema and the cross-reference checks reject malformed configs."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from leaf.config_checks import ConfigError, check_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture
def config():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def _validated(config):
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


def test_table_naming_an_undefined_dataset_is_rejected(config):
    config["tables"]["table1"]["datasets"] = ["demo", "koniq"]
    validate(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"tables.table1 names the dataset 'koniq'"):
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
    config["tables"]["table4"]["backbones"] = ["tf_efficientnet_lite0", "convnext_bsae"]
    with pytest.raises(ConfigError, match=r"tables.table4.backbones: 'convnext_bsae'.*list_models"):
        check_config(config)
    config["tables"]["table4"]["backbones"] = ["tf_efficientnet_lite0", "convnext_base"]
    check_config(config)  # a real timm model without packaged weights is fine


@pytest.mark.slow
def test_unknown_backbone_stops_the_dry_run(tmp_path):
    from workflow_helpers import snakemake, write_override

    override = write_override(tmp_path / "o.yaml", {"student": {"backbone": "not_a_model"}})
    result = snakemake(tmp_path, "-n", configfiles=[override], check=False)
    assert result.returncode != 0
    assert "student.backbone: 'not_a_model' is not a timm model" in result.stdout + result.stderr
