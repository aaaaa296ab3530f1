"""Checks of the workflow config that a JSON schema cannot express (cross references)."""

from __future__ import annotations


class ConfigError(ValueError):
    """The config is well-formed but inconsistent; the message names the key."""


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
    table4 = (config.get("tables") or {}).get("table4") or {}
    found += [("tables.table4.backbones", name) for name in table4.get("backbones", [])]
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
