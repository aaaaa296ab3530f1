"""SRCC, raw PLCC and logistic-fitted PLCC on hand-computed examples."""

import math
import warnings

import numpy as np
import pytest

from leaf.metrics import fit_logistic, logistic4, plcc, plcc_logistic, srcc


def test_srcc_hand_values():
    assert srcc([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert srcc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties: ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert srcc([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))
    # monotonic but non-linear: SRCC 1, PLCC below 1
    assert srcc([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)


def test_plcc_hand_value():
    # deviations [-1, 0, 1] and [-4/3, -1/3, 5/3]: 3 / sqrt(2 * 42 / 9) = 9 / sqrt(84)
    assert plcc([1, 2, 3], [1, 2, 4]) == pytest.approx(9 / math.sqrt(84))
    assert plcc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_undefined_correlations_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for metric in (srcc, plcc, plcc_logistic):
            assert math.isnan(metric([1, 1, 1], [1, 2, 3]))
            assert math.isnan(metric([1.0], [2.0]))


def test_non_finite_pairs_are_left_out():
    assert plcc([1, 2, np.nan, 3], [1, 2, 5, 4]) == pytest.approx(9 / math.sqrt(84))
    assert srcc([1, 2, 3, 4], [1, np.nan, 3, 4]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in length"):
        plcc([1, 2], [1, 2, 3])


def test_logistic_plcc_recovers_a_logistic_relation():
    x = np.linspace(-4, 4, 21)
    mos = logistic4(x, 5.0, 1.0, 0.5, 0.8)
    assert plcc(x, mos) < 0.97
    assert plcc_logistic(x, mos) == pytest.approx(1.0, abs=1e-6)
    params = fit_logistic(x, mos)
    assert np.allclose(logistic4(x, *params), mos, atol=1e-4)
    # a decreasing relation is fitted too (the logistic flips)
    assert plcc_logistic(-x, mos) == pytest.approx(1.0, abs=1e-6)


def test_logistic_plcc_falls_back_to_raw_with_a_warning():
    pred, mos = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    with pytest.warns(RuntimeWarning, match="raw PLCC"):
        assert plcc_logistic(pred, mos) == pytest.approx(plcc(pred, mos))
