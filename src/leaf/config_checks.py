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
