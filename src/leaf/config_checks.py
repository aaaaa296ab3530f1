"""Checks of the workflow config that a JSON schema cannot express (cross references)."""

from __future__ import annotations


class ConfigError(ValueError):
    """The config is well-formed but inconsistent; the message names the key."""


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the offending key on inconsistent settings."""
    datasets = config["datasets"]
    for table, spec in config.get("tables", {}).items():
        for name in spec.get("datasets", []):
            if name not in datasets:
                raise ConfigError(
                    f"tables.{table}.datasets names {name!r}, which is not defined under "
                    f"`datasets` (defined: {sorted(datasets)})"
                )
    levels = config["teacher"]["levels"]
    if len(levels["words"]) != len(levels["values"]):
        raise ConfigError(
            f"teacher.levels: {len(levels['words'])} words but {len(levels['values'])} values"
        )
    backend = config["teacher"]["backend"]
    if backend not in ("brisque",) and backend not in config["teacher"]:
        raise ConfigError(
            f"teacher.backend is {backend!r} but there is no teacher.{backend} section"
        )
