"""Hand-computed checks of the teacher math in leaf.teacher.levels."""

import numpy as np
import pytest

from leaf.teacher.levels import (
    binary_entropy,
    expected_score,
    level_probabilities,
    pair_confidence,
    pair_probability,
    pair_target,
)

VALUES = np.array([5.0, 4.0, 3.0, 2.0, 1.0])


def test_softmax_and_expectation_on_a_hand_example():
    # exp(logliks) = 1, 2, 3, 4, 5 -> p = k / 15; score = (5*1 + 4*2 + 3*3 + 2*4 + 1*5) / 15 = 7/3
    logliks = np.log([[1.0, 2.0, 3.0, 4.0, 5.0]])
    probs = level_probabilities(logliks)
    assert probs == pytest.approx(np.array([[1, 2, 3, 4, 5]]) / 15, abs=1e-15)
    assert expected_score(probs, VALUES) == pytest.approx([7 / 3], abs=1e-14)


def test_softmax_is_row_wise_and_shift_invariant():
    logliks = np.array([[0.0, 0.0, 0.0, 0.0, 0.0], [-3.0, -1.0, 2.0, 0.5, 0.0]])
    probs = level_probabilities(logliks)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert probs[0] == pytest.approx(np.full(5, 0.2))
    assert expected_score(probs, VALUES)[0] == pytest.approx(3.0)
    assert level_probabilities(logliks + 123.4) == pytest.approx(probs, abs=1e-12)


def test_softmax_is_stable_for_large_logits():
    logliks = np.array([[1000.0, 1000.0 + np.log(3.0)], [-1e4, -1e4 - np.log(3.0)]])
    probs = level_probabilities(logliks)
    assert np.all(np.isfinite(probs))
    assert probs == pytest.approx(np.array([[0.25, 0.75], [0.75, 0.25]]), abs=1e-12)


def test_pair_probability_is_the_two_way_softmax():
    assert pair_probability(np.log(3.0), 0.0) == pytest.approx(0.75)
    assert pair_probability(np.array([-2.0]), np.array([-2.0])) == pytest.approx([0.5])
    # -log(1 + e) vs -1 - log(1 + e): answer A is e times as likely as B
    assert pair_probability(-np.log1p(np.e), -1 - np.log1p(np.e)) == pytest.approx(
        np.e / (1 + np.e)
    )


def test_pair_probability_saturates_without_nan_for_large_logits():
    with np.errstate(over="ignore"):
        p = pair_probability(np.array([1000.0, 0.0, -800.0]), np.array([0.0, 1000.0, 0.0]))
    assert np.all(np.isfinite(p))
    assert p == pytest.approx([1.0, 0.0, 0.0], abs=1e-300)


def test_entropy_and_confidence_by_hand():
    assert binary_entropy(0.5) == pytest.approx(np.log(2.0))
    assert binary_entropy(np.array([0.0, 1.0])) == pytest.approx([0.0, 0.0])
    assert pair_confidence(0.5) == pytest.approx(0.0, abs=1e-15)
    # H(0.9) = -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.3250829734; omega = 1 - H / ln 2
    assert binary_entropy(0.9) == pytest.approx(0.3250829734, abs=1e-9)
    assert pair_confidence(0.9) == pytest.approx(1 - 0.3250829734 / np.log(2.0), abs=1e-9)
    assert pair_confidence(0.1) == pytest.approx(pair_confidence(0.9))


def test_confidence_tends_to_one_at_certainty():
    p = np.array([0.5, 0.6, 0.9, 0.99, 1 - 1e-9, 1.0])
    omega = pair_confidence(p)
    assert np.all(np.diff(omega) > 0)
    assert omega[-2] == pytest.approx(1.0, abs=1e-7)
    assert omega[-1] == 1.0 and pair_confidence(0.0) == 1.0


def test_pair_target_ties_go_to_a():
    assert pair_target(np.array([0.0, 0.49, 0.5, 0.51, 1.0])).tolist() == [0, 0, 1, 1, 1]
