"""The teacher's math: level log-likelihoods -> probabilities -> score; A/B log-probs -> preference.

Point-wise: softmax over the configured level words' log-likelihoods gives p_k, and the score is
the expectation sum_k v_k p_k (v = 5..1 for Excellent..Bad by default).
Pair-wise: softmax over (logprob_A, logprob_B) gives p_A; the hard target is t_ab = [p_A >= p_B];
the confidence is omega = 1 - H(p_A)/log 2, which is 0 at p_A = 0.5 and tends to 1 as p_A -> 0 or 1.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


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
