"""Lean packaging: the core install (pyproject's `dependencies`) scores images with a deployed
student, and the scoring path imports no optional package (workflow, export, BRISQUE).

The install test builds a fresh venv that sees ONLY the core distributions: the ones pyproject
lists, and their requirements, resolved from the installed metadata of this environment
(``importlib.metadata``) and exposed through a folder of symlinks named in a ``.pth`` file (no
download: torch is too heavy for a test). The package is installed into it without
dependencies or an index (``pip install --no-deps --no-build-isolation --no-index``), ``pip
check`` must pass (the core requirements are met by what is exposed), and a child Python scores
images there: anything else the scoring path imported would fail to import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image
from test_predict import LITE0, tiny_artifact, tiny_head
from workflow_helpers import ROOT

import leaf
from leaf.deploy import build_artifact, read_artifact, save_artifact
from leaf.model_folder import save_model_folder
from leaf.student.backbones import create_backbone
from leaf.student.eval_inputs import artifact_preprocess

# Packages of the extras the scoring path must never import (their top-level modules).
OPTIONAL_MODULES = (
    "pandas",
    "pyarrow",
    "scipy",
    "snakemake",
    "matplotlib",
    "skimage",
    "jsonschema",
    "openpyxl",
    "cv2",
    "brisque",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "vllm",
    "transformers",
)
# Scores every model given on the command line for one image; prints them and which optional
# modules ended up imported.
SCORE = """
import json, sys
import leaf
*models, image, optional = sys.argv[1:]
scores = {m: leaf.create_metric(m, device="cpu")(image).tolist() for m in models}
loaded = sorted(name for name in json.loads(optional) if name in sys.modules)
print(json.dumps({"scores": scores, "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A head-mode artifact, its model folder, a full-mode artifact and an image."""
    folder = tmp_path_factory.mktemp("core")
    backbone = create_backbone(LITE0, "package")
    head = tiny_artifact(folder / "head.leaf.pt", backbone)
    save_model_folder(read_artifact(head), folder / "head-hf")
    settings = {
        "cache_short_side": 72,
        "resize": 70,
        "crop": 64,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    full = build_artifact(
        tiny_head(int(backbone.num_features)),
        LITE0,
        backbone,
        provenance={"dataset": "toy", "mode": "full"},
        preprocess=artifact_preprocess(settings),
    )
    save_artifact(full, folder / "full.leaf.pt")
    rng = np.random.default_rng(0)
    image = folder / "images" / "photo.png"
    image.parent.mkdir()
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image)
    return {
        "head": head,
        "folder": folder / "head-hf",
        "full": folder / "full.leaf.pt",
        "image": image,
    }


def expected_scores(models: dict[str, Path]) -> dict[str, list[float]]:
    return {
        str(models[key]): leaf.create_metric(models[key], device="cpu")(models["image"]).tolist()
        for key in ("head", "folder", "full")
    }


def score_in(python: str | Path, models: dict[str, Path], env: dict | None = None) -> dict:
    paths = [str(models[key]) for key in ("head", "folder", "full")]
    run = subprocess.run(
        [str(python), "-c", SCORE, *paths, str(models["image"]), json.dumps(OPTIONAL_MODULES)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_scoring_imports_no_optional_package(models):
    """In this (full) environment: scoring both modes and a model folder leaves every optional
    package unimported, and gives the in-process scores."""
    result = score_in(sys.executable, models)
    assert result["loaded"] == []
    for model, scores in expected_scores(models).items():
        np.testing.assert_allclose(result["scores"][model], scores, rtol=1e-6)


def core_distributions() -> dict[str, metadata.Distribution]:
    """pyproject's core requirements (plus setuptools, the build backend) and everything they
    require (markers evaluated, extras followed), as installed here, by canonical name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [(Requirement(text), ("",)) for text in [*project["dependencies"], "setuptools"]]
    found: dict[str, metadata.Distribution] = {}
    while pending:
        requirement, extras = pending.pop()
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            found[name] = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement.name} (a core requirement) is not installed here")
        asked = ("", *requirement.extras)
        pending += [(Requirement(text), asked) for text in found[name].requires or []]
    return found


def expose(distributions: dict[str, metadata.Distribution], folder: Path) -> None:
    """Symlink the top-level files and folders of ``distributions`` (dist-info included) into
    ``folder``."""
    folder.mkdir()
    for name, distribution in distributions.items():
        assert distribution.files, f"{name} has no RECORD: cannot tell its files"
        base = Path(distribution.locate_file(""))
        for top in {file.parts[0] for file in distribution.files}:
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            if not (folder / top).exists() and (base / top).exists():
                (folder / top).symlink_to(base / top)


@pytest.mark.slow
def test_core_install_alone_scores_images(models, tmp_path):
    distributions = core_distributions()
    assert not set(OPTIONAL_MODULES) & set(distributions), "an extra leaked into the core"
    assert {"torch", "timm", "pillow", "numpy", "safetensors"} <= set(distributions)
    expose(distributions, tmp_path / "core")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "leaf-core.pth").write_text(f"{tmp_path / 'core'}\n")

    project = tmp_path / "project"  # a copy: the build writes into the source tree
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        shutil.copy(ROOT / name, project / name)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    pip = [str(python), "-m", "pip"]
    # Python 3.11's venv brings an old setuptools (no bdist_wheel): build with the exposed one.
    subprocess.run([*pip, "uninstall", "-q", "-y", "setuptools"], env=env, check=True)
    install = [*pip, "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    run = subprocess.run([*install, str(project)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, env=env)
    assert check.returncode == 0, check.stdout + check.stderr

    result = score_in(python, models, env)
    assert result["loaded"] == []
    for model, scores in expected_scores(models).items():
        np.testing.assert_allclose(result["scores"][model], scores, rtol=1e-6)
    where = subprocess.run(
        [str(python), "-c", "import leaf; print(leaf.__file__)"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the installed copy
    # Project metadata: the code's licence as an SPDX expression, with its files (PEP 639).
    show = (
        "from importlib.metadata import files, metadata; "
        "print(metadata('leaf-iqa')['License-Expression']); "
        "print(sorted(f.name for f in files('leaf-iqa') if f.parent.name == 'licenses'))"
    )
    meta = subprocess.run([str(python), "-c", show], capture_output=True, text=True, env=env)
    assert meta.stdout.split("\n")[:2] == ["Apache-2.0", "['LICENSE', 'NOTICE']"], meta

    # The command line too: `leaf predict` with CSV output needs nothing more; Parquet output
    # names the extra that installs pyarrow.
    leaf_cli = venv / "bin" / "leaf"
    images = str(models["image"].parent)
    out = tmp_path / "scores.csv"
    predict = [str(leaf_cli), "predict", "--model", str(models["folder"]), images, "--no-progress"]
    run = subprocess.run([*predict, "-o", str(out)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert out.read_text().splitlines()[0].startswith("path,score")
    run = subprocess.run(
        [*predict, "-o", str(tmp_path / "s.parquet")], capture_output=True, text=True, env=env
    )
    assert run.returncode == 1 and "pip install 'leaf-iqa[workflow]'" in run.stderr, run.stderr
    version = subprocess.run([str(leaf_cli), "--version"], capture_output=True, text=True, env=env)
    project_version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version.stdout.strip() == f"leaf {project_version}"
