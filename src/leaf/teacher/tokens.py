"""Decision tokens (level words, A/B) and the judging loop shared by the MLLM backends.

Resolution rule (:func:`resolve_word`). A word is judged *in context*, i.e. as the continuation of
the rendered prompt it answers, because that is what the model would emit:

1. Preferred spelling: if the prompt ends with a non-whitespace character (the point prompt's
   "... The quality of the image is") the word follows a space, so the leading-space variant
   (" Good") is tried first, then the bare word; if the prompt ends with whitespace or is empty
   (the pair prompt ends with the chat template's "assistant\\n"), the bare word ("A") is tried
   first, then " A". Without a prompt the bare word is tried first.
2. A variant is accepted when tokenising ``prompt + variant`` gives exactly the tokens of
   ``prompt`` followed by ONE more token, and that token is not the unknown token. (A prompt that
   ends with a space usually fails this: the space merges with the word. Drop the space.)
3. If neither variant is accepted, :class:`TokenResolutionError` names the word and shows how
   each variant was tokenised.

Distinct words must resolve to distinct ids. The spelling used for every word is recorded in the
provenance (``level_tokens``).

:class:`PromptedTeacher` is the part of :class:`~leaf.teacher.vllm_backend.VllmTeacher` and
:class:`~leaf.teacher.hf_backend.TransformersTeacher` that does not depend on the engine: batching,
image decoding, and turning each output into validated decision log-probs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from leaf.teacher.backend import Levels, TeacherOutputError
from leaf.teacher.prompts import (
    ModelProcessors,
    PromptTemplates,
    RenderedPrompt,
    load_rgb_images,
    render_prompts,
)

PAIR_WORDS = ("A", "B")


class TokenResolutionError(ValueError):
    """A decision word is not exactly one token for this tokenizer."""


@dataclass(frozen=True)
class ResolvedToken:
    """A decision word, the spelling that is one token, and that token's id."""

    word: str
    text: str
    token_id: int


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [str(token) for token in tokenizer.convert_ids_to_tokens(list(ids))]


def candidate_spellings(word: str, prompt_text: str | None) -> tuple[str, str]:
    """The two spellings of ``word`` in the order they are tried after ``prompt_text``."""
    bare, spaced = word, " " + word
    if prompt_text and not prompt_text[-1].isspace():
        return spaced, bare
    return bare, spaced


def _new_tokens(tokenizer: Any, prompt_text: str, spelling: str) -> list[int] | None:
    """Tokens that ``spelling`` adds after the prompt, or None if it changes the prompt's tokens."""
    prefix = _encode(tokenizer, prompt_text) if prompt_text else []
    full = _encode(tokenizer, prompt_text + spelling)
    if full[: len(prefix)] != prefix:
        return None
    return full[len(prefix) :]


def resolve_word(tokenizer: Any, word: str, prompt_text: str | None = None) -> ResolvedToken:
    """Resolve ``word`` to one token id following the module's rule (see the module docstring)."""
    if not word or word != word.strip():
        raise TokenResolutionError(f"decision word {word!r} must be non-empty, without spaces")
    unk_id = getattr(tokenizer, "unk_token_id", None)
    attempts = []
    for spelling in candidate_spellings(word, prompt_text):
        new = _new_tokens(tokenizer, prompt_text or "", spelling)
        if new is not None and len(new) == 1 and new[0] != unk_id:
            return ResolvedToken(word=word, text=spelling, token_id=int(new[0]))
        if new is None:
            attempts.append(f"{spelling!r} merges with the end of the prompt")
        else:
            attempts.append(f"{spelling!r} -> {_token_strings(tokenizer, new)}")
    context = f" after the prompt ending {prompt_text[-30:]!r}" if prompt_text else ""
    raise TokenResolutionError(
        f"decision word {word!r} is not exactly one (known) token for "
        f"{type(tokenizer).__name__}{context}: " + "; ".join(attempts) + ". Choose words that "
        "are single tokens for this model (see docs/teacher_gpu.md)."
    )


def resolve_words(
    tokenizer: Any, words: Sequence[str], prompt_text: str | None = None
) -> tuple[ResolvedToken, ...]:
    """Resolve several words; distinct words must get distinct token ids."""
    resolved = tuple(resolve_word(tokenizer, word, prompt_text) for word in words)
    by_id: dict[int, str] = {}
    for token in resolved:
        if token.token_id in by_id and by_id[token.token_id] != token.word:
            raise TokenResolutionError(
                f"decision words {by_id[token.token_id]!r} and {token.word!r} resolve to the same "
                f"token id {token.token_id}"
            )
        by_id[token.token_id] = token.word
    return resolved


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
