"""Teacher backend on plain transformers: for users without vLLM, and the reference for vLLM.

A :class:`~leaf.teacher.prompted.PromptedTeacher`: the same prompts, chat template and decision
tokens as the vLLM backend. Each batch of ``batch_size`` requests is ONE
forward pass through the model's processor (left padding, so the decision position is the last
one in every row); the log-softmax of the last position's logits over the whole vocabulary gives
the raw log-probabilities of the decision tokens, the quantity vLLM's ``logprob_token_ids``
returns. Works for checkpoints with an ``AutoProcessor`` and an ``AutoModelForImageTextToText``
class (e.g. Qwen2-VL, Qwen3-VL, InternVL3.5-HF).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from leaf.teacher.levels import Levels
from leaf.teacher.prompted import DecisionSetup, PromptedTeacher
from leaf.teacher.prompts import ModelProcessors, PromptTemplates, image_processor_kwargs
from leaf.torch_compat import ensure_torchvision_importable

_DTYPES = ("auto", "float32", "float16", "bfloat16")


class TransformersTeacher(PromptedTeacher):
    """MLLM teacher running a transformers model in-process (see the module docstring).

    ``min_pixels``/``max_pixels``/``processor_kwargs`` are image preprocessing options, as in the
    vLLM backend; ``image_placeholder`` switches prompt rendering to string content.
    """

    name = "transformers"

    def __init__(
        self,
        levels: Levels,
        model: str,
        prompts: Mapping[str, Any] | PromptTemplates | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        batch_size: int = 8,
        revision: str | None = None,
        *,
        trust_remote_code: bool = False,
        image_placeholder: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        processor_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ensure_torchvision_importable()
        import torch
        from transformers import AutoModelForImageTextToText

        self.model = model
        self.revision = revision
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.image_placeholder = image_placeholder
        self.image_kwargs = image_processor_kwargs(min_pixels, max_pixels, processor_kwargs)

        processors = ModelProcessors.load(model, revision, trust_remote_code)
        if processors.processor is None:
            raise ValueError(
                f"{model} has no transformers processor; the transformers backend needs one to "
                "feed images (use the vllm backend, or the model's -HF checkpoint)"
            )
        self.processor = processors.processor
        self.processor.tokenizer.padding_side = "left"
        self.setup = DecisionSetup.for_model(processors, levels, prompts, image_placeholder)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.net = AutoModelForImageTextToText.from_pretrained(
            model, dtype=torch_dtype, revision=revision, trust_remote_code=trust_remote_code
        )
        self.net = self.net.to(device).eval()

    def _decision_logprobs(
        self, kind: str, images: list[list[Any]]
    ) -> list[Mapping[int, float] | None]:
        """One padded forward pass over the batch; raw log-probs of the decision tokens."""
        import torch

        prompt = self.setup.prompts[kind].text
        inputs = self.processor(
            text=[prompt] * len(images),
            images=[image for group in images for image in group],
            padding=True,
            return_tensors="pt",
            **self.image_kwargs,
        ).to(self.device)
        with torch.inference_mode():
            logits = self.net(**inputs, logits_to_keep=1).logits[:, -1, :]
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        token_ids = [token.token_id for token in self.setup.tokens(kind)]
        picked = logprobs[:, token_ids].tolist()
        return [dict(zip(token_ids, row, strict=True)) for row in picked]

    def _backend_provenance(self) -> dict:
        import torch

        return {
            "backend_version": f"torch {torch.__version__}",
            "logprob_mode": "full_vocabulary_log_softmax",
            "options": {
                "dtype": self.dtype,
                "device": self.device,
                "batch_size": self.batch_size,
                "image_placeholder": self.image_placeholder,
                "image_processor_kwargs": self.image_kwargs,
            },
        }
