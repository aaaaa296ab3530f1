"""The teacher's levels and math: level log-likelihoods -> probabilities -> score; A/B log-probs
-> preference.

Levels (:class:`Levels`, config ``teacher.levels``): K >= 2 level words w_k, each worth a value v_k
(default Excellent..Bad worth 5..1).
Point-wise: softmax over the level words' log-likelihoods gives p_k, and the score is the
expectation sum_k v_k p_k.
Pair-wise: softmax over (logprob_A, logprob_B) gives p_A; the hard target is t_ab = [p_A >= p_B];
the confidence is omega = 1 - H(p_A)/log 2, which is 0 at p_A = 0.5 and tends to 1 as p_A -> 0 or 1.

Position-debiased pairs (beyond the paper): the pair is asked in both orders, (a, b) and (b, a).
With p_fwd = P(first is better | a first) and p_rev = P(first is better | b first), the combined
preference is the mean of the two estimates that a is better,
    p_a = (p_fwd + (1 - p_rev)) / 2,
which cancels any constant preference for a slot (if the model adds delta to the first slot,
p_fwd = p + delta and 1 - p_rev = p - delta). Its log-probabilities are [log p_a, log(1 - p_a)],
so t_ab and omega follow from p_a as usual; when the orders disagree, p_a moves towards 0.5 and
omega falls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit


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
        """From ``teacher.levels`` (``{words: [...], values: [...]}``); values become floats."""
        return cls(tuple(cfg["words"]), tuple(float(v) for v in cfg["values"]))


def level_probabilities(logliks: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an (n, K) array of level log-likelihoods (numerically stable)."""
    logliks = np.asarray(logliks, dtype=np.float64)
    shifted = logliks - logliks.max(axis=-1, keepdims=True)
    expd = np.exp(shifted)
    return expd / expd.sum(axis=-1, keepdims=True)


def expected_score(probs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Expectation sum_k v_k p_k for each row of an (n, K) probability array."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(values, dtype=np.float64)


def pair_probability(logprob_a: np.ndarray, logprob_b: np.ndarray) -> np.ndarray:
    """p_A = exp(l_A) / (exp(l_A) + exp(l_B)), i.e. the two-way softmax, computed stably."""
    diff = np.asarray(logprob_a, dtype=np.float64) - np.asarray(logprob_b, dtype=np.float64)
    return expit(diff)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -p log p - (1-p) log(1-p) in nats, with 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(q > 0, q * np.log(q), 0.0))
    return h


def pair_confidence(p_a: np.ndarray) -> np.ndarray:
    """omega = 1 - H(p_A) / log 2, clipped to [0, 1] (rounding gives -2e-16 next to p = 0.5)."""
    return np.clip(1.0 - binary_entropy(p_a) / np.log(2.0), 0.0, 1.0)


def pair_target(p_a: np.ndarray) -> np.ndarray:
    """t_ab = [p_A >= p_B] = [p_A >= 0.5] as 0/1 floats."""
    return (np.asarray(p_a, dtype=np.float64) >= 0.5).astype(np.float64)


def debiased_pair_logprobs(
    forward: np.ndarray, reverse: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combine (n, 2) A/B log-probs asked as (a, b) and as (b, a) into one preference per pair.

    Returns (logprobs (n, 2) of "a better"/"b better", p_a_forward, p_a_reverse) where the last
    two are the two orders' estimates of P(a better); they disagree where they fall on different
    sides of 0.5.
    """
    p_forward = pair_probability(forward[:, 0], forward[:, 1])
    p_reverse = 1.0 - pair_probability(reverse[:, 0], reverse[:, 1])
    p_a = (p_forward + p_reverse) / 2.0
    with np.errstate(divide="ignore"):
        logprobs = np.column_stack([np.log(p_a), np.log1p(-p_a)])
    return logprobs, p_forward, p_reverse


def order_disagreement(p_a_forward: np.ndarray, p_a_reverse: np.ndarray) -> np.ndarray:
    """Whether the two orders pick different winners (boolean per pair)."""
    return pair_target(p_a_forward) != pair_target(p_a_reverse)
