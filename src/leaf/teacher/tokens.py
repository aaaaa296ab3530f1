"""Decision words (level words, A/B) resolved to the one token id each that an MLLM would emit.

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

Distinct words must resolve to distinct ids (:func:`resolve_words`). Each
:class:`ResolvedToken` keeps the spelling that was accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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
