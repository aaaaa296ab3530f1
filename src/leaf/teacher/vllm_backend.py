"""The production teacher backend: an MLLM served by vLLM's offline engine (``vllm.LLM``).

A :class:`~leaf.teacher.prompted.PromptedTeacher` whose engine call is ONE batched
``llm.generate`` per ``batch_size`` chunk (default 512; a Snakemake shard is one call of the
backend), never one call per image; vLLM schedules the prompts in its own continuous batches.

Decision log-probs. ``SamplingParams(max_tokens=1, logprob_token_ids=ids)`` returns the raw
log-probabilities (log-softmax over the whole vocabulary) of exactly the decision tokens at the
next position: ``logprob_mode = "logprob_token_ids"``. Where the installed vLLM has no such field
the backend falls back to ``allowed_token_ids=ids`` with ``logprobs=len(ids)`` and the engine's
``logprobs_mode="processed_logprobs"``: ``logprob_mode = "allowed_token_ids+processed_logprobs"``.
Those values are renormalised over the decision tokens only; they differ from the raw ones by a
per-row constant, which the cache's softmax removes. The mode is recorded in the provenance.

Options come from the ``teacher.vllm`` config section; see :mod:`leaf.teacher.presets` for the
defaults and the named presets, and docs/teacher_gpu.md for a GPU recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leaf.teacher.levels import Levels
from leaf.teacher.presets import engine_options
from leaf.teacher.prompted import DecisionSetup, PromptedTeacher
from leaf.teacher.prompts import ModelProcessors, PromptTemplates, image_processor_kwargs
from leaf.teacher.tokens import ResolvedToken
from leaf.torch_compat import ensure_torchvision_importable

LOGPROB_TOKEN_IDS = "logprob_token_ids"
ALLOWED_TOKEN_IDS = "allowed_token_ids+processed_logprobs"
_LOGPROB_MODE_NAMES = {
    "auto": None,
    "logprob_token_ids": LOGPROB_TOKEN_IDS,
    "allowed_token_ids": ALLOWED_TOKEN_IDS,
    ALLOWED_TOKEN_IDS: ALLOWED_TOKEN_IDS,
}
# Options LEAF consumes itself; every other option is a ``vllm.LLM`` argument.
_LEAF_OPTIONS = frozenset(
    {"batch_size", "image_placeholder", "logprob_mode", "min_pixels", "max_pixels"}
)


def import_vllm() -> Any:
    """Import vLLM in this process, with the CPU-wheel workarounds LEAF needs.

    1. :func:`ensure_torchvision_importable` (vLLM imports transformers, which imports
       torchvision).
    2. vLLM inspects model classes in a fresh ``python -m vllm...registry`` subprocess, only to
       keep CUDA uninitialised in the parent; that subprocess imports torchvision without the
       workaround and fails beside the CPU torch wheel. On a CPU-only torch build there is no CUDA
       to protect, so the inspection runs in-process instead. GPU builds are left untouched.
    """
    ensure_torchvision_importable()
    import torch
    import vllm

    if torch.version.cuda is None and not torch.cuda.is_available():
        from vllm.model_executor.models import registry

        if hasattr(registry, "_run_in_subprocess"):
            registry._run_in_subprocess = lambda fn: fn()
    return vllm


def resolve_logprob_mode(requested: str, sampling_params_cls: type) -> str:
    """The logprob mode to use: ``requested`` ("auto" picks ``logprob_token_ids`` if available)."""
    if requested not in _LOGPROB_MODE_NAMES:
        raise ValueError(
            f"unknown logprob_mode {requested!r}; expected one of {sorted(_LOGPROB_MODE_NAMES)}"
        )
    fields = getattr(sampling_params_cls, "__struct_fields__", None)
    if fields is None:  # not a msgspec struct: fall back to the constructor's parameters
        import inspect

        fields = inspect.signature(sampling_params_cls).parameters
    has_token_ids = "logprob_token_ids" in fields
    mode = _LOGPROB_MODE_NAMES[requested] or (
        LOGPROB_TOKEN_IDS if has_token_ids else ALLOWED_TOKEN_IDS
    )
    if mode == LOGPROB_TOKEN_IDS and not has_token_ids:
        raise ValueError("this vLLM's SamplingParams has no logprob_token_ids field")
    return mode


def llm_kwargs(options: Mapping[str, Any], logprob_mode: str) -> dict[str, Any]:
    """The ``vllm.LLM`` arguments for merged ``options`` (see :func:`engine_options`).

    Every option LEAF does not consume itself, plus the image limits folded into
    ``mm_processor_kwargs``, ``limit_mm_per_prompt={"image": 2}`` (pairs show two images) and, in
    the fallback mode, ``logprobs_mode="processed_logprobs"``.
    """
    kwargs = {
        key: value
        for key, value in options.items()
        if key not in _LEAF_OPTIONS and value is not None
    }
    processor_kwargs = image_processor_kwargs(
        options.get("min_pixels"),
        options.get("max_pixels"),
        kwargs.pop("mm_processor_kwargs", None),
    )
    if processor_kwargs:
        kwargs["mm_processor_kwargs"] = processor_kwargs
    kwargs.setdefault("limit_mm_per_prompt", {"image": 2})
    if logprob_mode == ALLOWED_TOKEN_IDS:
        kwargs["logprobs_mode"] = "processed_logprobs"
    return kwargs


def decision_logprobs(output: Any) -> dict[int, float] | None:
    """Token id -> log-prob at the first generated position of one ``RequestOutput``."""
    completions = getattr(output, "outputs", None)
    steps = completions[0].logprobs if completions else None
    if not steps:
        return None
    return {int(token_id): float(entry.logprob) for token_id, entry in steps[0].items()}


class VllmTeacher(PromptedTeacher):
    """MLLM teacher on vLLM's offline engine (see the module docstring).

    Every option left as None takes its value from ``preset`` (a name in
    :data:`leaf.teacher.presets.PRESETS`), else from
    :data:`leaf.teacher.presets.ENGINE_DEFAULTS`. ``min_pixels``/``max_pixels`` and
    ``mm_processor_kwargs`` go to the model's multimodal processor; ``image_placeholder`` switches
    prompt rendering to string content (see :mod:`leaf.teacher.prompts`); ``engine_extra`` is
    passed to ``vllm.LLM`` unchanged (e.g. ``distributed_executor_backend="uni"``).
    """

    name = "vllm"

    def __init__(
        self,
        levels: Levels,
        model: str | None = None,
        prompts: Mapping[str, Any] | PromptTemplates | None = None,
        *,
        preset: str | None = None,
        dtype: str | None = None,
        tensor_parallel_size: int | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        max_num_seqs: int | None = None,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool | None = None,
        trust_remote_code: bool | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        mm_processor_kwargs: Mapping[str, Any] | None = None,
        image_placeholder: str | None = None,
        batch_size: int | None = None,
        revision: str | None = None,
        seed: int | None = None,
        logprob_mode: str | None = None,
        **engine_extra: Any,
    ) -> None:
        self.options = engine_options(
            preset,
            model=model,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            enforce_eager=enforce_eager,
            trust_remote_code=trust_remote_code,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            mm_processor_kwargs=mm_processor_kwargs,
            image_placeholder=image_placeholder,
            batch_size=batch_size,
            revision=revision,
            seed=seed,
            logprob_mode=logprob_mode,
            **engine_extra,
        )
        self.preset = preset
        self.batch_size = int(self.options["batch_size"])
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.model = str(self.options["model"])
        self.revision = self.options["revision"]

        vllm = import_vllm()
        self.vllm_version = str(vllm.__version__)
        self.logprob_mode = resolve_logprob_mode(self.options["logprob_mode"], vllm.SamplingParams)

        processors = ModelProcessors.load(
            self.model, self.revision, bool(self.options["trust_remote_code"])
        )
        self.setup = DecisionSetup.for_model(
            processors, levels, prompts, self.options["image_placeholder"]
        )
        self._sampling = {
            kind: self._sampling_params(vllm.SamplingParams, self.setup.tokens(kind))
            for kind in self.setup.prompts
        }
        self.llm = vllm.LLM(**llm_kwargs(self.options, self.logprob_mode))

    def _sampling_params(self, sampling_params_cls: type, tokens: tuple[ResolvedToken, ...]) -> Any:
        token_ids = [token.token_id for token in tokens]
        common = {"max_tokens": 1, "temperature": 0.0, "detokenize": False}
        if self.logprob_mode == LOGPROB_TOKEN_IDS:
            return sampling_params_cls(logprob_token_ids=token_ids, **common)
        return sampling_params_cls(allowed_token_ids=token_ids, logprobs=len(token_ids), **common)

    def _generate(self, requests: list[dict[str, Any]], params: Any) -> list[Any]:
        """ONE batched engine call over all ``requests``."""
        return self.llm.generate(requests, params, use_tqdm=False)

    def _decision_logprobs(
        self, kind: str, images: list[list[Any]]
    ) -> list[Mapping[int, float] | None]:
        prompt = self.setup.prompts[kind].text
        requests = [
            {
                "prompt": prompt,
                "multi_modal_data": {"image": group[0] if len(group) == 1 else group},
            }
            for group in images
        ]
        return [
            decision_logprobs(output) for output in self._generate(requests, self._sampling[kind])
        ]

    def _backend_provenance(self) -> dict:
        engine = {key: value for key, value in self.options.items() if key != "model"}
        return {
            "backend_version": self.vllm_version,
            "preset": self.preset,
            "logprob_mode": self.logprob_mode,
            "engine": engine,
        }
