"""Build a teacher backend from the ``teacher`` config section, and hash what defines it.

The section (``$defs/teacher`` of workflow/schemas/config.schema.yaml) names a ``backend`` and holds
one options section per backend, read by that backend only. :func:`judgment_config` keeps what the
backend needs (the rules pass it as a param, so changing ``tau``, ``shards`` or another backend's
options does not rerun the teacher); :func:`teacher_hash` hashes what defines the judgments
(:func:`teacher_identity`): model, revision, dtype, prompts, levels, pair settings, image processing
(pixel limits, tiles), logprob mode, and for a vLLM preset its resolved content rather than its
name, so that editing a preset recomputes the cache. Options that only change speed, memory or
placement (:data:`NON_JUDGMENT_OPTIONS`: batch sizes, GPU memory, tensor parallelism, eager mode,
KV-cache size, executor, device, ...) are left out, so moving to another GPU reuses the cache.
``teacher_hash(judgment_config(cfg)) == teacher_hash(cfg)``. docs/cache_schema.md writes the rule
down.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

from leaf.hashing import HASH_LENGTH, canonical_hash
from leaf.teacher.backend import TeacherBackend
from leaf.teacher.levels import Levels

# Top-level keys that define the judgments (besides the selected backend's own options).
JUDGMENT_KEYS = ("backend", "levels", "model", "prompts", "pairs")
# Backend options that change speed, memory, placement or logging only, never a judgment.
NON_JUDGMENT_OPTIONS = frozenset(
    {
        # every backend
        "workers",
        "num_workers",
        "progress",
        "shards",
        "tau",
        "batch_size",
        "device",
        # vLLM engine: scheduling, memory and parallelism
        "max_num_seqs",
        "max_num_batched_tokens",
        "gpu_memory_utilization",
        "kv_cache_memory_bytes",
        "swap_space",
        "cpu_offload_gb",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "data_parallel_size",
        "distributed_executor_backend",
        "enforce_eager",
        "enable_prefix_caching",
        "block_size",
        "max_model_len",
        "disable_log_stats",
    }
)
# backend name -> (module, class) for the MLLM backends, imported only when selected.
LAZY_BACKENDS = {
    "vllm": ("leaf.teacher.vllm_backend", "VllmTeacher"),
    "transformers": ("leaf.teacher.hf_backend", "TransformersTeacher"),
}
BACKENDS = ("brisque", "import", *LAZY_BACKENDS)


def _backend_name(teacher_cfg: dict) -> str:
    name = teacher_cfg.get("backend")
    if name not in BACKENDS:
        raise ValueError(f"unknown teacher backend {name!r}; choose one of {BACKENDS}")
    return name


def _backend_options(teacher_cfg: dict, name: str) -> dict[str, Any]:
    return dict(teacher_cfg.get(name) or {})


def judgment_config(teacher_cfg: dict) -> dict[str, Any]:
    """The teacher config without tau, shards, the options of unselected backends and the
    selected backend's speed-only options (:func:`speed_options`): what the teacher rules pass
    as a param, so that changing any of those reruns nothing."""
    name = _backend_name(teacher_cfg)
    selected = {key: teacher_cfg[key] for key in (*JUDGMENT_KEYS, name) if key in teacher_cfg}
    selected = copy.deepcopy(selected)
    if name in selected:
        selected[name] = {
            k: v for k, v in (selected[name] or {}).items() if k not in NON_JUDGMENT_OPTIONS
        }
    return selected


def speed_options(teacher_cfg: dict) -> dict[str, Any]:
    """The selected backend's options that change only speed, memory or placement (batch
    sizes, GPU memory, tensor parallelism, ...): read by the teacher job at run time, outside
    its params and its hash."""
    name = _backend_name(teacher_cfg)
    options = _backend_options(teacher_cfg, name)
    return {k: v for k, v in options.items() if k in NON_JUDGMENT_OPTIONS}


def resolved_options(teacher_cfg: dict) -> dict[str, Any]:
    """The selected backend's options; for vLLM a named preset is replaced by its content
    (explicit options over the preset's)."""
    name = _backend_name(teacher_cfg)
    options = _backend_options(teacher_cfg, name)
    if name == "vllm" and options.get("preset"):
        from leaf.teacher.presets import preset

        explicit = {k: v for k, v in options.items() if k != "preset" and v is not None}
        options = {**preset(options["preset"]), **explicit}
    return options


def teacher_identity(teacher_cfg: dict) -> dict[str, Any]:
    """The part of the teacher config that determines its judgments (what is hashed)."""
    identity = {key: teacher_cfg.get(key) for key in JUDGMENT_KEYS}
    options = resolved_options(teacher_cfg)
    identity["options"] = {
        k: v for k, v in options.items() if k not in NON_JUDGMENT_OPTIONS and v is not None
    }
    return copy.deepcopy(identity)


def teacher_model(teacher_cfg: dict) -> str | None:
    """What the teacher's judgments come from, for a model card: the MLLM checkpoint of the vllm
    and transformers backends (a vLLM preset resolved), the file name(s) of imported judgments,
    None for BRISQUE (a classical metric, no model)."""
    name = _backend_name(teacher_cfg)
    options = resolved_options(teacher_cfg)
    if name in LAZY_BACKENDS:
        return options.get("model") or teacher_cfg.get("model")
    if name == "import":
        paths = options.get("path")
        paths = paths if isinstance(paths, list) else [paths]
        return ", ".join(Path(str(path)).name for path in paths if path) or None
    return None


def teacher_hash(teacher_cfg: dict) -> str:
    """Stable 12-hex sha256 of the canonical JSON of :func:`teacher_identity`
    (:func:`leaf.hashing.canonical_hash`)."""
    return canonical_hash(teacher_identity(teacher_cfg), HASH_LENGTH)


def teacher_gpus(teacher_cfg: dict) -> int:
    """GPUs one teacher job (shard) needs: ``tensor_parallel_size`` of the vLLM engine (its
    preset's, unless set), 1 for the transformers backend unless its ``device`` is "cpu", and 0
    for the CPU teachers (BRISQUE, imported judgments)."""
    name = _backend_name(teacher_cfg)
    options = _backend_options(teacher_cfg, name)
    if name == "vllm":
        from leaf.teacher.presets import ENGINE_DEFAULTS, preset

        resolved = {
            **ENGINE_DEFAULTS,
            **(preset(options["preset"]) if options.get("preset") else {}),
        }
        resolved.update({k: v for k, v in options.items() if v is not None})
        return int(resolved["tensor_parallel_size"])
    if name == "transformers":
        return 0 if str(options.get("device", "cpu")).startswith("cpu") else 1
    return 0


def make_backend(teacher_cfg: dict, speed: dict | None = None) -> TeacherBackend:
    """Instantiate the backend named by ``teacher_cfg["backend"]``, with the speed-only options
    ``speed`` (:func:`speed_options`) over the section's own."""
    name = _backend_name(teacher_cfg)
    levels = Levels.from_config(teacher_cfg["levels"])
    options = {**_backend_options(teacher_cfg, name), **(speed or {})}
    if name == "brisque":
        from leaf.optional import missing_extra

        try:
            from leaf.teacher.brisque_backend import BrisqueTeacher
        except ImportError as error:  # brisque, OpenCV, scikit-image
            raise missing_extra("the BRISQUE teacher", "brisque", error) from error

        return BrisqueTeacher(levels, **options)
    if name == "import":
        from leaf.teacher.import_backend import ImportedEnsemble, ImportedTeacher

        if "path" not in options:
            raise ValueError("teacher backend 'import' needs teacher.import.path")
        if isinstance(options["path"], list):  # several files: an ensemble
            return ImportedEnsemble(levels, **options)
        return ImportedTeacher(levels, **options)
    module_name, class_name = LAZY_BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
        backend_class = getattr(module, class_name)
    except (ImportError, AttributeError) as error:
        raise ImportError(
            f"teacher backend {name!r} needs {module_name}.{class_name}, which cannot be "
            f"imported ({error}); is the backend installed (e.g. pip install '.[vllm]')?"
        ) from error
    if "model" in teacher_cfg:
        options.setdefault("model", teacher_cfg["model"])
    return backend_class(levels, **options, prompts=teacher_cfg.get("prompts"))
