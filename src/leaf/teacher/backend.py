"""The interface every teacher backend implements.

A backend turns images into *raw judgments*; everything derived from them (probabilities,
scores, preferences, confidences) is computed by :mod:`leaf.teacher.cache` so that every backend
produces exactly the same cache schema (see docs/cache_schema.md).

- ``point_logliks(paths)`` returns an (n, K) float array: for each image, one log-likelihood per
  configured level word, in the order of ``levels.words``.
- ``pair_logprobs(paths_a, paths_b)`` returns an (n, 2) float array: the log-probabilities of the
  answers "A" and "B" for each (first-shown, second-shown) image pair.
- ``provenance()`` returns a JSON-serialisable dict written into the Parquet file metadata
  (model id and revision, backend name and version, prompt text, token ids, logprob mode, ...).

Backends must never fill a missing or NaN judgment silently: raise ``TeacherOutputError`` naming
the image instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class TeacherOutputError(RuntimeError):
    """A backend produced an unusable judgment (missing or non-finite log-probability)."""


@dataclass(frozen=True)
class Levels:
    """Level words (e.g. Excellent..Bad) and the value each is worth (e.g. 5..1)."""

    words: tuple[str, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.words) != len(self.values) or len(self.words) < 2:
            raise ValueError(
                f"levels need at least two words and one value per word, got words={self.words} "
                f"values={self.values}"
            )

    @classmethod
    def from_config(cls, cfg: dict) -> Levels:
        return cls(tuple(cfg["words"]), tuple(float(v) for v in cfg["values"]))


class TeacherBackend(Protocol):
    name: str

    def point_logliks(self, paths: Sequence[str]) -> np.ndarray: ...

    def pair_logprobs(self, paths_a: Sequence[str], paths_b: Sequence[str]) -> np.ndarray: ...

    def provenance(self) -> dict: ...
