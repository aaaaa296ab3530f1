"""The interface every teacher backend implements (:class:`TeacherBackend`).

A backend returns *raw judgments* only; :mod:`leaf.teacher.cache` derives the rest.

- ``point_logliks(paths)`` returns an (n, K) float array: for each image, one log-likelihood per
  configured level word, in the order of ``levels.words``.
- ``pair_logprobs(paths_a, paths_b)`` returns an (n, 2) float array: the log-probabilities of the
  answers "A" and "B" for each (first-shown, second-shown) image pair.
- ``provenance()`` returns a JSON-serialisable dict describing the judge (model id and revision,
  backend name and version, prompt text, token ids, logprob mode, ...), stored with the cache.

Backends must never fill a missing or NaN judgment silently: raise ``TeacherOutputError`` naming
the image instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class TeacherOutputError(RuntimeError):
    """A backend produced an unusable judgment (missing or non-finite log-probability)."""


class TeacherBackend(Protocol):
    """What a teacher backend provides; the module docstring gives each method's contract."""

    name: str

    def point_logliks(self, paths: Sequence[str]) -> np.ndarray: ...

    def pair_logprobs(self, paths_a: Sequence[str], paths_b: Sequence[str]) -> np.ndarray: ...

    def provenance(self) -> dict: ...
