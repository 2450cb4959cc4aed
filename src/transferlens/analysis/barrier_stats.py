"""The barrier's interval over the evaluation set, from the per-example terms of a curve.

An interpolation curve (:func:`~transferlens.analysis.interpolation.interpolation_curve`)
keeps, at every lambda ``j``, each example's loss ``l[j, i]`` and (``multiclass``) its
correctness ``c[j, i]``. A bootstrap resample of the evaluation set is an index vector
``idx`` of ``n`` draws; with ``w_i`` the number of times example ``i`` is drawn, the
resampled curve is ``L_j = sum_i w_i l[j, i] / n`` (``M_j`` likewise from ``c``) and its
barriers are those of :func:`~transferlens.analysis.interpolation.barrier`::

    loss_barrier*   = max_j  L_j - line_L(lam_j)
    metric_barrier* = max_j  line_M(lam_j) - M_j

No forward pass is repeated: a resample is a weighted sum of kept terms. The interval
is the percentile interval of :mod:`~transferlens.analysis.stats` over the same
resamples (:func:`~transferlens.analysis.stats.resample_indices`) for every curve that
shares the evaluation set, so the replicates of several seed pairs can be averaged
into the replicates of their mean barrier (:func:`mean_barrier_interval`).
``multilabel`` curves keep no correctness (a ROC-AUC is not a mean over examples):
their metric replicates are NaN.

The curve itself gets the same treatment point by point (:func:`curve_replicates`):
``(L_j, M_j)`` of each resample, whose percentile interval at each lambda is the
interval of the curve's loss and metric over the evaluation set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transferlens.analysis.interpolation import InterpolationResult, rise_above_line
from transferlens.analysis.stats import index_counts, percentile_interval, resample_indices
from transferlens.errors import UserInputError

# Resamples turned into counts at once: bounds memory (rows * n int64s).
_ROWS_PER_CHUNK = 256


def _sorted_terms(curve: InterpolationResult) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if curve.example_loss is None:
        raise UserInputError("the interpolation curve kept no per-example terms")
    lam = np.asarray(curve.lams, dtype=np.float64)
    order = np.argsort(lam, kind="stable")
    lam = lam[order]
    if len(lam) == 0 or lam[0] != 0.0 or lam[-1] != 1.0:
        raise UserInputError("the interpolation curve must include lam = 0 and lam = 1")
    correct = None if curve.example_correct is None else curve.example_correct[order]
    return lam, curve.example_loss[order], correct


def barrier_replicates(curve: InterpolationResult, indices: np.ndarray) -> np.ndarray:
    """``[r, 2]``: (loss barrier, metric barrier) of the curve resampled by each row of
    ``indices`` (``[r, n]`` example indices, see the module docstring)."""
    lam, loss, correct = _sorted_terms(curve)
    indices = np.asarray(indices)
    n = loss.shape[1]
    if indices.ndim != 2 or indices.shape[1] != n:
        raise UserInputError(f"barrier resamples must be [r, {n}] indices (got {indices.shape})")
    out = np.full((indices.shape[0], 2), np.nan)
    for start in range(0, indices.shape[0], _ROWS_PER_CHUNK):
        counts = index_counts(indices[start : start + _ROWS_PER_CHUNK], n).astype(np.float64)
        rows = slice(start, start + counts.shape[0])
        out[rows, 0] = rise_above_line(lam, counts @ loss.T / n)
        if correct is not None:
            out[rows, 1] = rise_above_line(lam, -(counts @ correct.T) / n)
    return out


def curve_replicates(curve: InterpolationResult, indices: np.ndarray) -> np.ndarray:
    """``[r, len(lams), 2]``: (loss ``L_j``, metric ``M_j``) at each lambda, in the
    curve's own order, of the curve resampled by each row of ``indices`` (``[r, n]``
    example indices; module docstring). Metric NaN for a ``multilabel`` curve. The
    identity resample ``arange(n)`` gives the curve's mean loss and metric."""
    if curve.example_loss is None:
        raise UserInputError("the interpolation curve kept no per-example terms")
    loss, correct = curve.example_loss, curve.example_correct
    indices = np.asarray(indices)
    n = loss.shape[1]
    if indices.ndim != 2 or indices.shape[1] != n:
        raise UserInputError(f"curve resamples must be [r, {n}] indices (got {indices.shape})")
    out = np.full((indices.shape[0], loss.shape[0], 2), np.nan)
    for start in range(0, indices.shape[0], _ROWS_PER_CHUNK):
        counts = index_counts(indices[start : start + _ROWS_PER_CHUNK], n).astype(np.float64)
        rows = slice(start, start + counts.shape[0])
        out[rows, :, 0] = counts @ loss.T / n
        if correct is not None:
            out[rows, :, 1] = counts @ correct.T / n
    return out


def barrier_interval(
    curve: InterpolationResult, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((loss_low, loss_high), (metric_low, metric_high))``: the percentile interval of
    the barriers over ``n_resamples`` bootstrap resamples of the evaluation set (NaN
    bounds for ``n_resamples = 0``)."""
    return mean_barrier_interval([curve], n_resamples, confidence, seed)


def mean_barrier_interval(
    curves: Sequence[InterpolationResult],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The interval of the mean barrier of ``curves`` (evaluated on the same examples,
    e.g. the seed pairs of one pair kind): each resample draws the same examples for
    every curve, and its statistic is the mean of the curves' resampled barriers."""
    if n_resamples == 0 or not curves:
        return (np.nan, np.nan), (np.nan, np.nan)
    n = curves[0].example_loss.shape[1] if curves[0].example_loss is not None else 0
    indices = resample_indices(n, n_resamples, seed) if n else np.zeros((0, 0), dtype=np.int64)
    replicates = np.mean([barrier_replicates(curve, indices) for curve in curves], axis=0)
    low, high = percentile_interval(replicates, confidence)
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))
