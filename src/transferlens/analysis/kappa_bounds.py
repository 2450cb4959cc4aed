"""How far Cohen's kappa can go, given the two models' accuracies (Geirhos et al. 2020).

Geirhos, Meding & Wichmann (NeurIPS 2020, "Beyond accuracy: quantifying trial-by-trial
behaviour of CNNs and humans by measuring error consistency") point out that the
accuracies alone bound the error consistency. With accuracies ``p1, p2`` (fractions
right), the agreement two independent models would show is

    c_exp = p1 p2 + (1 - p1)(1 - p2).

The observed agreement ``c_obs = both_right + both_wrong`` (fractions) is not free
either: ``both_right`` ranges over ``[max(0, p1 + p2 - 1), min(p1, p2)]`` and
``both_wrong = 1 - p1 - p2 + both_right``, so ``c_obs = 1 - p1 - p2 + 2 both_right``
lies in ``[c_min, c_max]`` with

    c_max = 1 - |p1 - p2|     (the weaker model is wrong wherever the stronger one is)
    c_min = |p1 + p2 - 1|     (their mistakes overlap as little as possible)

and kappa in ``[kappa_min, kappa_max]``, ``kappa_x = (c_x - c_exp) / (1 - c_exp)``.
``kappa_max`` is in ``[0, 1]``: 1 exactly when ``p1 = p2``, 0 when one model is right
on every example or the other wrong on every one (then ``c_obs = c_exp`` and kappa is 0
too). ``kappa_min`` is in ``[-1, 0]``. Models of different accuracy cannot reach
kappa = 1, so a pair's kappa is read beside its ``kappa_max`` and as the ratio
``kappa / kappa_max`` (:func:`transferlens.analysis.model_mistakes.kappa_ratio_from_counts`).

Degenerate case, as for kappa itself: ``c_exp = 1`` (both models right everywhere, or
both wrong everywhere) forces ``c_obs = 1``, kappa is defined as 1 and so are both bounds.

Like kappa, the bounds are computed from integer counts (``n`` examples, ``R1, R2``
right): ``n^2 c_exp = E = R1 R2 + (n - R1)(n - R2)``, ``n c_max = n - |R1 - R2|``, so
``kappa_max = (n (n - |R1 - R2|) - E) / (n^2 - E)`` has the same denominator as kappa and
``kappa <= kappa_max`` holds exactly in floating point.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def margins(counts: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(n, right_first, right_second)`` from ``[..., 4]`` counts in the cell order
    ``both_right, both_wrong, only_first_wrong, only_second_wrong`` (float64)."""
    counts = np.asarray(counts, dtype=np.float64)
    both_right, _, only_first_wrong, only_second_wrong = np.moveaxis(counts, -1, 0)
    return counts.sum(axis=-1), both_right + only_second_wrong, both_right + only_first_wrong


def expected_agreement_count(n: np.ndarray, right_a: np.ndarray, right_b: np.ndarray) -> np.ndarray:
    """``n^2 c_exp = R1 R2 + (n - R1)(n - R2)`` (an integer, exact in float64)."""
    return right_a * right_b + (n - right_a) * (n - right_b)


def _bound(agreement_count: np.ndarray, n: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """``(n * agreement_count - E) / (n^2 - E)``, 1 where ``n^2 = E`` (degenerate rule)."""
    denominator = n * n - expected
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (n * agreement_count - expected) / denominator
    return np.where(denominator == 0, 1.0, value)


def kappa_max_from_counts(counts: Any) -> np.ndarray:
    """The largest kappa the two accuracies allow, from ``[..., 4]`` counts (module docstring)."""
    n, right_a, right_b = margins(counts)
    expected = expected_agreement_count(n, right_a, right_b)
    return _bound(n - np.abs(right_a - right_b), n, expected)


def kappa_min_from_counts(counts: Any) -> np.ndarray:
    """The smallest kappa the two accuracies allow, from ``[..., 4]`` counts."""
    n, right_a, right_b = margins(counts)
    expected = expected_agreement_count(n, right_a, right_b)
    return _bound(np.abs(right_a + right_b - n), n, expected)


def kappa_bounds(accuracy_a: Any, accuracy_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(kappa_min, kappa_max)`` of two models with accuracies in ``[0, 1]`` (floats or
    arrays): the module docstring's formulas on fractions (1 where ``c_exp = 1``)."""
    p1, p2 = np.asarray(accuracy_a, dtype=np.float64), np.asarray(accuracy_b, dtype=np.float64)
    chance = p1 * p2 + (1.0 - p1) * (1.0 - p2)
    with np.errstate(divide="ignore", invalid="ignore"):
        low = (np.abs(p1 + p2 - 1.0) - chance) / (1.0 - chance)
        high = (1.0 - np.abs(p1 - p2) - chance) / (1.0 - chance)
    degenerate = chance == 1.0
    return np.where(degenerate, 1.0, low), np.where(degenerate, 1.0, high)
