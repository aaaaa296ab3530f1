"""The engine-independent half of an MLLM teacher: what it asks, and how its answers are read.

:class:`DecisionSetup` holds the rendered point and pair prompts and the decision tokens that
answer them (the level words after the point prompt, "A"/"B" after the pair prompt), and their
provenance record. :class:`PromptedTeacher` is the judging loop an engine plugs into: it splits the
requests into batches of ``batch_size``, decodes each batch's images once, makes ONE engine call
per batch (:meth:`PromptedTeacher._decision_logprobs`) and keeps the decision tokens' log-probs of
every output, raising :class:`~leaf.teacher.backend.TeacherOutputError` for a missing or
non-finite one (:func:`token_logprobs`) or a wrong number of outputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leaf.teacher.backend import TeacherOutputError
from leaf.teacher.levels import Levels
from leaf.teacher.prompts import (
    ModelProcessors,
    PromptTemplates,
    RenderedPrompt,
    load_rgb_images,
    render_prompts,
)
from leaf.teacher.tokens import ResolvedToken, resolve_words

PAIR_WORDS = ("A", "B")


def token_logprobs(
    logprobs: Mapping[int, float] | None, tokens: Sequence[ResolvedToken], item: str
) -> np.ndarray:
    """Pick the decision tokens' log-probs from one output; missing or non-finite -> error.

    ``logprobs`` maps token id -> log-probability at the decision position; ``item`` names the
    input in the error (e.g. ``"image a.png"``). ``-inf`` (a token the engine masked) is as
    unusable as NaN: the cache must never hold a silently filled value.
    """
    values = np.empty(len(tokens), dtype=np.float64)
    for index, token in enumerate(tokens):
        value = None if logprobs is None else logprobs.get(token.token_id)
        if value is None or not math.isfinite(float(value)):
            state = "missing" if value is None else f"{float(value)}"
            raise TeacherOutputError(
                f"the engine returned no usable log-probability for {token.word!r} "
                f"(token {token.token_id}: {state}) for {item}"
            )
        values[index] = float(value)
    return values


@dataclass(frozen=True)
class DecisionSetup:
    """Rendered point/pair prompts and their resolved decision tokens, shared by backends."""

    levels: Levels
    prompts: Mapping[str, RenderedPrompt]
    level_tokens: tuple[ResolvedToken, ...]
    pair_tokens: tuple[ResolvedToken, ...]

    @classmethod
    def build(
        cls, tokenizer: Any, levels: Levels, prompts: Mapping[str, RenderedPrompt]
    ) -> DecisionSetup:
        """Resolve the level words after the point prompt and A/B after the pair prompt."""
        return cls(
            levels=levels,
            prompts=dict(prompts),
            level_tokens=resolve_words(tokenizer, levels.words, prompts["point"].text),
            pair_tokens=resolve_words(tokenizer, PAIR_WORDS, prompts["pair"].text),
        )

    @classmethod
    def for_model(
        cls,
        processors: ModelProcessors,
        levels: Levels,
        prompts: Mapping[str, Any] | PromptTemplates | None = None,
        image_placeholder: str | None = None,
    ) -> DecisionSetup:
        """Render the prompt templates (config mapping, templates, or None = defaults) through the
        model's chat template and resolve the decision tokens with its tokenizer."""
        if not isinstance(prompts, PromptTemplates):
            prompts = PromptTemplates.from_config(prompts)
        rendered = render_prompts(processors.chat_source, prompts, image_placeholder)
        return cls.build(processors.tokenizer, levels, rendered)

    def provenance(self) -> dict:
        """Prompt texts and hashes, level words/values, token ids and spellings."""
        record: dict[str, Any] = {}
        for kind, prompt in self.prompts.items():
            record[f"prompt_{kind}"] = prompt.text
            record[f"prompt_{kind}_sha256"] = prompt.sha256
        record.update(
            level_words=list(self.levels.words),
            level_values=list(self.levels.values),
            level_token_ids=[token.token_id for token in self.level_tokens],
            level_tokens=[token.text for token in self.level_tokens],
            pair_token_ids=[token.token_id for token in self.pair_tokens],
            pair_tokens=[token.text for token in self.pair_tokens],
        )
        return record

    def tokens(self, kind: str) -> tuple[ResolvedToken, ...]:
        """The decision tokens of a prompt kind: the level words (point) or A/B (pair)."""
        return self.level_tokens if kind == "point" else self.pair_tokens


def describe_inputs(paths: Sequence[str]) -> str:
    """Name one request's images in error messages."""
    if len(paths) == 1:
        return f"image {paths[0]}"
    return "image pair (" + ", ".join(str(path) for path in paths) + ")"


class PromptedTeacher:
    """Engine-independent half of an MLLM teacher backend.

    Subclasses set ``name``, ``model``, ``revision``, ``setup`` (a :class:`DecisionSetup`) and
    ``batch_size``, and implement :meth:`_decision_logprobs`, which runs ONE batched model call over
    a list of requests, and :meth:`_backend_provenance`.
    """

    name: str
    model: str
    revision: str | None
    setup: DecisionSetup
    batch_size: int

    def provenance(self) -> dict:
        """JSON-safe record: backend, model, prompts, hashes, decision tokens, backend details."""
        import transformers

        record = {
            "backend": self.name,
            "model": self.model,
            "revision": self.revision,
            "transformers_version": transformers.__version__,
            **self.setup.provenance(),
            **self._backend_provenance(),
        }
        return json.loads(json.dumps(record, default=str))

    def _backend_provenance(self) -> dict:
        """Backend-specific fields (``backend_version``, ``logprob_mode``, options)."""
        raise NotImplementedError

    def point_logliks(self, paths: Sequence[str]) -> np.ndarray:
        """(n, K) log-likelihoods of the level words after the point prompt, one row per image."""
        return self._judge("point", [[str(path)] for path in paths])

    def pair_logprobs(self, paths_a: Sequence[str], paths_b: Sequence[str]) -> np.ndarray:
        """(n, 2) log-probs of "A" and "B" after the pair prompt showing image a, then image b."""
        if len(paths_a) != len(paths_b):
            raise ValueError(f"got {len(paths_a)} first and {len(paths_b)} second images")
        return self._judge(
            "pair", [[str(a), str(b)] for a, b in zip(paths_a, paths_b, strict=True)]
        )

    def _judge(self, kind: str, requests: list[list[str]]) -> np.ndarray:
        tokens = self.setup.tokens(kind)
        values = np.empty((len(requests), len(tokens)), dtype=np.float64)
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            decoded = iter(load_rgb_images([path for paths in chunk for path in paths]))
            images = [[next(decoded) for _ in paths] for paths in chunk]
            outputs = self._decision_logprobs(kind, images)
            if len(outputs) != len(chunk):
                raise TeacherOutputError(
                    f"the engine returned {len(outputs)} outputs for {len(chunk)} requests, "
                    f"starting at {describe_inputs(chunk[0])}"
                )
            for offset, (output, paths) in enumerate(zip(outputs, chunk, strict=True)):
                values[start + offset] = token_logprobs(output, tokens, describe_inputs(paths))
        return values

    def _decision_logprobs(
        self, kind: str, images: list[list[Any]]
    ) -> list[Mapping[int, float] | None]:
        """Token id -> log-prob at the decision position, for each request (one batched call)."""
        raise NotImplementedError
