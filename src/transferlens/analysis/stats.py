"""The one bootstrap every analysis uses: seeded, percentile, vectorised.

Two ways to call :func:`bootstrap_interval`:

* **values** (e.g. one number per seed): ``bootstrap_interval([0.71, 0.74, 0.69])``
  resamples the values with replacement and returns the interval of their mean.
* **a statistic of resampled units** (examples, batches): ``bootstrap_interval(stat, n=N)``
  draws index vectors ``idx`` (N draws with replacement from ``range(N)``) and calls
  ``stat(idx)``. With ``vectorized=True`` ``stat`` receives a ``[r, N]`` block of index
  rows at once and returns ``r`` values (or ``[r, ...]`` arrays: every entry gets its own
  interval from the same resamples). Statistics that are sums over units are cheapest
  through :func:`index_counts` (``counts @ per_unit_terms``).

The interval is the percentile interval: the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles (numpy's default linear interpolation) of the
resampled statistics. Resamples whose statistic is NaN are left out; if all are NaN
the interval is ``(nan, nan)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transferlens.analysis.checks import check_count
from transferlens.errors import UserInputError

# Index rows drawn per call of a vectorised statistic: bounds memory (r * n int64s)
# while keeping numpy busy. It depends only on n, so results depend only on the seed.
_INDICES_PER_CHUNK = 1 << 22

Interval = tuple[Any, Any]


def _check_settings(n_resamples: int, confidence: float) -> None:
    check_count(n_resamples, "n_resamples", minimum=1)
    if not 0.0 < float(confidence) < 1.0:
        raise UserInputError(f"confidence must be between 0 and 1 (got {confidence!r})")


def check_n_bootstrap(n_bootstrap: int) -> int:
    """The analyses' number of resamples: an integer >= 0 (0: no interval, NaN bounds)."""
    return check_count(n_bootstrap, "n_bootstrap", minimum=0)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> Interval:
    """Percentile interval over axis 0 of bootstrap replicates, NaN replicates ignored.

    Returns floats for a 1-D input, arrays of shape ``replicates.shape[1:]`` otherwise.
    """
    replicates = np.asarray(replicates, dtype=np.float64)
    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        # An entry whose every replicate is NaN gets NaN bounds, without numpy's warning.
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(replicates, [alpha, 1.0 - alpha], axis=0)
    if replicates.ndim == 1:
        return float(low), float(high)
    return low, high


def index_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """``[r, n]`` counts: how often each unit appears in each row of ``[r, n]`` indices.

    A statistic that is a sum over units becomes ``index_counts(idx, n) @ terms``.
    """
    indices = np.asarray(indices)
    rows = indices.shape[0]
    offsets = (np.arange(rows, dtype=np.int64) * n)[:, None]
    return np.bincount((indices + offsets).ravel(), minlength=rows * n).reshape(rows, n)


def resample_indices(n: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """The ``[n_resamples, n]`` index rows :func:`bootstrap_interval` draws for this seed."""
    return np.concatenate(list(_index_chunks(n, n_resamples, seed)), axis=0)


def _index_chunks(n: int, n_resamples: int, seed: int):
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _INDICES_PER_CHUNK // max(n, 1))
    done = 0
    while done < n_resamples:
        rows = min(per_chunk, n_resamples - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


def bootstrap_interval(
    statistic: Callable[[np.ndarray], Any] | Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    n: int | None = None,
    vectorized: bool = False,
) -> Interval:
    """Seeded percentile bootstrap interval ``(low, high)``.

    ``statistic`` is either the values to resample (the interval is for their mean) or a
    callable of resampled unit indices, with ``n`` the number of units (see the module
    docstring). The same ``seed`` always draws the same resamples, so intervals are
    reproducible and different analyses of the same units can share resamples.
    """
    _check_settings(n_resamples, confidence)
    if not callable(statistic):
        values = np.asarray(statistic, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise UserInputError(
                f"bootstrap values must be a non-empty 1-D sequence (got shape {values.shape})"
            )
        return bootstrap_interval(
            lambda idx: values[idx].mean(axis=1),
            n_resamples,
            confidence,
            seed,
            n=values.size,
            vectorized=True,
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserInputError(f"bootstrap: n (the number of units) must be >= 1 (got {n!r})")
    replicates = []
    for chunk in _index_chunks(n, n_resamples, seed):
        if vectorized:
            values = np.asarray(statistic(chunk), dtype=np.float64)
            if values.shape[:1] != (chunk.shape[0],):
                raise ValueError(
                    f"a vectorized statistic must return {chunk.shape[0]} rows, got {values.shape}"
                )
        else:
            values = np.stack([np.asarray(statistic(row), dtype=np.float64) for row in chunk])
        replicates.append(values)
    return percentile_interval(np.concatenate(replicates, axis=0), confidence)
