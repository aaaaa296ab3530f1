"""Correlation metrics between predicted quality and MOS: SRCC, raw PLCC and logistic-fitted PLCC.

Pairs where either value is not finite (e.g. an unknown MOS) are left out. All three return
``nan`` (without warnings) when a correlation is undefined: fewer than two pairs left, or a
constant input.
"""

from __future__ import annotations

import warnings

import numpy as np


def _clean_pairs(pred: np.ndarray, mos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the finite pairs of the two inputs as float64 vectors (raises on a length
    mismatch)."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    mos = np.asarray(mos, dtype=np.float64).ravel()
    if pred.shape != mos.shape:
        raise ValueError(f"pred and mos differ in length: {pred.size} vs {mos.size}")
    finite = np.isfinite(pred) & np.isfinite(mos)
    return pred[finite], mos[finite]


def _is_degenerate(pred: np.ndarray, mos: np.ndarray) -> bool:
    """True when no correlation is defined (fewer than two points or a constant input)."""
    return pred.size < 2 or np.ptp(pred) == 0 or np.ptp(mos) == 0


def srcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Spearman rank correlation (scipy.stats.spearmanr, average ranks for ties)."""
    pred, mos = _clean_pairs(pred, mos)
    if _is_degenerate(pred, mos):
        return float("nan")
    from scipy import stats  # imported on first use: scoring never needs scipy

    return float(stats.spearmanr(pred, mos).statistic)


def plcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Raw Pearson linear correlation, without any fitted mapping."""
    pred, mos = _clean_pairs(pred, mos)
    if _is_degenerate(pred, mos):
        return float("nan")
    from scipy import stats

    return float(stats.pearsonr(pred, mos).statistic)


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic: ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    z = np.clip(-(x - b3) / (np.abs(b4) + 1e-12), -500.0, 500.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def logistic_initial_guess(pred: np.ndarray, mos: np.ndarray) -> list[float]:
    """Robust start for :func:`logistic4`: MOS range (flipped for a decreasing trend), pred
    median and spread."""
    high, low = float(np.max(mos)), float(np.min(mos))
    if np.corrcoef(pred, mos)[0, 1] < 0:
        high, low = low, high
    spread = float(np.std(pred)) or 1.0
    return [high, low, float(np.median(pred)), spread]


def fit_logistic(pred: np.ndarray, mos: np.ndarray) -> np.ndarray | None:
    """Least-squares parameters of :func:`logistic4` mapping ``pred`` onto ``mos``; ``None`` when
    the fit fails or is under-determined (fewer than 5 points)."""
    pred, mos = _clean_pairs(pred, mos)
    if pred.size < 5 or _is_degenerate(pred, mos):
        return None
    from scipy import optimize

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(
                logistic4, pred, mos, p0=logistic_initial_guess(pred, mos), maxfev=20000
            )
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    if not np.all(np.isfinite(params)):
        return None
    return params


def plcc_logistic_fit(pred: np.ndarray, mos: np.ndarray) -> float | None:
    """PLCC after the VQEG 4-parameter logistic mapping of ``pred`` onto ``mos``; None when the
    fit does not converge, has too few points (fewer than 5) or collapses to a constant; NaN
    for degenerate input (see :func:`srcc`)."""
    pred, mos = _clean_pairs(pred, mos)
    if _is_degenerate(pred, mos):
        return float("nan")
    params = fit_logistic(pred, mos)
    fitted = None if params is None else logistic4(pred, *params)
    if fitted is None or np.ptp(fitted) == 0:
        return None
    return plcc(fitted, mos)


def plcc_logistic(pred: np.ndarray, mos: np.ndarray) -> float:
    """PLCC after the VQEG 4-parameter logistic mapping of ``pred`` onto ``mos``.

    Falls back to the raw PLCC, with a ``RuntimeWarning``, when the fit does not converge, has
    too few points (fewer than 5) or collapses to a constant (:func:`plcc_logistic_fit` says
    which happened).
    """
    value = plcc_logistic_fit(pred, mos)
    if value is None:
        warnings.warn(
            "logistic fit failed, collapsed or has too few points; reporting the raw PLCC",
            RuntimeWarning,
            stacklevel=2,
        )
        return plcc(pred, mos)
    return value


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float for strict JSON, with None for a missing or non-finite value."""
    return None if value is None or not np.isfinite(value) else float(value)


def correlation_record(pred: np.ndarray, mos: np.ndarray) -> dict:
    """The metrics every evaluation reports: srcc, plcc (raw), plcc_logistic (None when the
    logistic fit did not converge: never the raw PLCC in its place), plcc_logistic_converged,
    constant_predictions (every prediction equal: SRCC and PLCC are then undefined, None) and n
    (the number of predictions)."""
    fitted = plcc_logistic_fit(pred, mos)
    pred_array = np.asarray(pred, dtype=np.float64)
    return {
        "srcc": finite_or_none(srcc(pred, mos)),
        "plcc": finite_or_none(plcc(pred, mos)),
        "plcc_logistic": finite_or_none(fitted),
        "plcc_logistic_converged": fitted is not None,
        "constant_predictions": bool(len(pred_array) > 0 and np.ptp(pred_array) == 0),
        "n": int(len(pred)),
    }
