"""What an MLLM teacher is shown: prompt templates, their rendering, and the images.

Templates are plain strings that live in config (``teacher.prompts``); the defaults are below.
``<image>`` marks where an image goes (one marker for the point prompt, two for the pair prompt).

- **point** (Q-Align style): the user asks for a quality rating and the assistant's answer is
  pre-filled up to the level word, so the next token is the decision ("... is" -> " Good").
- **pair**: two images labelled A and B; the assistant answer is empty, so the next token is
  the decision ("A" or "B").

Rendering goes through the model's OWN chat template (:func:`render_prompt`):

1. the user text is split at the ``<image>`` markers into chat content parts (text is kept
   verbatim, one ``{"type": "image"}`` part per marker) and rendered by the processor's (else the
   tokenizer's) ``apply_chat_template(..., add_generation_prompt=True)``, which inserts the model's
   own image placeholder (e.g. Qwen's ``<|vision_start|><|image_pad|><|vision_end|>``);
2. or, when ``image_placeholder`` is given (models whose chat template only takes string content,
   e.g. remote-code checkpoints such as InternVL's original ``<image>`` format; no preset needs
   it), the markers are replaced by that placeholder and the user text is rendered as one string
   message;
3. the pre-filled assistant text is appended verbatim.

The result is a :class:`RenderedPrompt`: the exact final text and its sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IMAGE_MARKER = "<image>"

DEFAULT_POINT_USER = f"{IMAGE_MARKER} Can you rate the quality of the image?"
DEFAULT_POINT_ANSWER = "The quality of the image is"
DEFAULT_PAIR_USER = (
    f"Image A: {IMAGE_MARKER} Image B: {IMAGE_MARKER} Which image has higher quality? "
    "Answer with A or B."
)
DEFAULT_PAIR_ANSWER = ""

PROMPT_KINDS = {"point": 1, "pair": 2}  # prompt kind -> number of images it shows


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt: the user turn (with ``<image>`` markers) and the pre-filled assistant text."""

    user: str
    answer: str = ""

    @property
    def n_images(self) -> int:
        return self.user.count(IMAGE_MARKER)

    @classmethod
    def from_config(cls, cfg: str | Mapping[str, Any], default_answer: str) -> PromptTemplate:
        """A string is the user text (default answer); a mapping has ``user`` and ``answer``."""
        if isinstance(cfg, str):
            return cls(cfg, default_answer)
        unknown = set(cfg) - {"user", "answer"}
        if unknown or "user" not in cfg:
            raise ValueError(
                f"a prompt must be a string or a mapping with 'user' (and optionally 'answer'), "
                f"got keys {sorted(cfg)}"
            )
        return cls(str(cfg["user"]), str(cfg.get("answer", default_answer)))


@dataclass(frozen=True)
class PromptTemplates:
    """The point and pair templates of one teacher."""

    point: PromptTemplate = PromptTemplate(DEFAULT_POINT_USER, DEFAULT_POINT_ANSWER)
    pair: PromptTemplate = PromptTemplate(DEFAULT_PAIR_USER, DEFAULT_PAIR_ANSWER)

    def __post_init__(self) -> None:
        for kind, n_images in PROMPT_KINDS.items():
            template = getattr(self, kind)
            if template.n_images != n_images:
                raise ValueError(
                    f"the {kind} prompt must contain {IMAGE_MARKER!r} exactly {n_images} time(s), "
                    f"found {template.n_images} in {template.user!r}"
                )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> PromptTemplates:
        """Build from ``teacher.prompts`` (``{point: ..., pair: ...}``); None gives the defaults."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(PROMPT_KINDS)
        if unknown:
            raise ValueError(f"unknown prompt kind(s) {sorted(unknown)}; expected point and pair")
        defaults = cls()
        return cls(
            point=PromptTemplate.from_config(cfg["point"], DEFAULT_POINT_ANSWER)
            if "point" in cfg
            else defaults.point,
            pair=PromptTemplate.from_config(cfg["pair"], DEFAULT_PAIR_ANSWER)
            if "pair" in cfg
            else defaults.pair,
        )

    def template(self, kind: str) -> PromptTemplate:
        if kind not in PROMPT_KINDS:
            raise ValueError(f"unknown prompt kind {kind!r}; expected one of {list(PROMPT_KINDS)}")
        return getattr(self, kind)


@dataclass(frozen=True)
class RenderedPrompt:
    """The exact text sent to the model (images still as one placeholder each)."""

    kind: str
    text: str
    n_images: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _content_parts(user: str) -> list[dict[str, str]]:
    """Split the user text at the image markers into chat content parts (text kept verbatim)."""
    parts: list[dict[str, str]] = []
    for index, chunk in enumerate(user.split(IMAGE_MARKER)):
        if index > 0:
            parts.append({"type": "image"})
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def _has_chat_template(obj: Any) -> bool:
    return bool(getattr(obj, "chat_template", None))


def render_prompt(
    chat_source: Any,
    template: PromptTemplate,
    kind: str,
    image_placeholder: str | None = None,
) -> RenderedPrompt:
    """Render ``template`` through the chat template of ``chat_source`` (processor or tokenizer).

    With ``image_placeholder=None`` the images are structured content parts and the chat template
    inserts the model's placeholder; when the source knows its image token (``image_token``,
    e.g. the Qwen and InternVL processors) the rendered text must contain it once per image.
    With a placeholder string the markers are replaced by it and the message content is one
    string.
    """
    if not _has_chat_template(chat_source):
        raise ValueError(
            f"{type(chat_source).__name__} has no chat template; the teacher prompts must be "
            "rendered through the model's own chat template"
        )
    if image_placeholder is None:
        content: Any = _content_parts(template.user)
    else:
        content = template.user.replace(IMAGE_MARKER, image_placeholder)
    messages = [{"role": "user", "content": content}]
    text = chat_source.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    image_token = image_placeholder or getattr(chat_source, "image_token", None)
    if image_token and text.count(image_token) != template.n_images:
        raise ValueError(
            f"the chat template rendered the {kind} prompt with {text.count(image_token)} "
            f"{image_token!r} placeholder(s) instead of {template.n_images}: {text!r}"
        )
    return RenderedPrompt(kind=kind, text=text + template.answer, n_images=template.n_images)


def render_prompts(
    chat_source: Any, templates: PromptTemplates, image_placeholder: str | None = None
) -> dict[str, RenderedPrompt]:
    """Render the point and the pair prompt; keyed by kind."""
    return {
        kind: render_prompt(chat_source, templates.template(kind), kind, image_placeholder)
        for kind in PROMPT_KINDS
    }


@dataclass(frozen=True)
class ModelProcessors:
    """The model's transformers processor (None if it has none) and tokenizer."""

    processor: Any | None
    tokenizer: Any

    @property
    def chat_source(self) -> Any:
        """The processor when it has a chat template (it knows the image placeholders), else the
        tokenizer (e.g. remote-code checkpoints without a processor and a string-content template).
        """
        return self.processor if _has_chat_template(self.processor) else self.tokenizer

    @classmethod
    def load(
        cls, model: str, revision: str | None = None, trust_remote_code: bool = False
    ) -> ModelProcessors:
        """Load with transformers (offline when ``HF_HUB_OFFLINE=1``)."""
        from leaf.torch_compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        from transformers import AutoProcessor, AutoTokenizer

        kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
        try:
            processor = AutoProcessor.from_pretrained(model, **kwargs)
        except (OSError, ValueError, KeyError, TypeError):
            processor = None
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None:
            processor = None  # AutoProcessor fell back to a bare tokenizer
            tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
        return cls(processor=processor, tokenizer=tokenizer)


def image_processor_kwargs(
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Image preprocessing options given to the model's processor by every backend.

    ``min_pixels``/``max_pixels`` are the Qwen-VL family's resize limits; ``extra`` holds any
    other processor option (e.g. InternVL's tiling: ``crop_to_patches``, ``max_patches``).
    """
    kwargs = dict(extra or {})
    if min_pixels is not None:
        kwargs["min_pixels"] = int(min_pixels)
    if max_pixels is not None:
        kwargs["max_pixels"] = int(max_pixels)
    return kwargs


def load_rgb_images(paths: Sequence[str]) -> list[Any]:
    """Decode images as RGB PIL images; one error naming every path that failed."""
    from leaf.images import ImageReadError, read_rgb

    images, failures = [], []
    for path in paths:
        try:
            images.append(read_rgb(path))
        except ImageReadError as err:
            failures.append(str(err))
    if failures:
        raise OSError("cannot read teacher input image(s):\n  " + "\n  ".join(failures))
    return images
