"""CKA values and their bootstrap intervals over batches, from a one-pass accumulator.

The pass (:class:`~transferlens.analysis.cka_estimators.MinibatchCKA`) sums the HSIC of
every two (model, layer) rows, ``S = sum_b H_b`` (``[T, T]``), and keeps each batch's
``H_b``. A table cell is one entry ``(i, j)`` of ``CKA(S) = S_ij / sqrt(S_ii S_jj)``;
a pair name's value is the mean of its combinations' cells (e.g. the seed pairs of
``PT-RIT``). A bootstrap resample draws ``B`` batches with replacement; with ``w_b``
the count of batch ``b`` it is ``CKA(sum_b w_b H_b)``, and the percentile interval
(:mod:`~transferlens.analysis.stats`) is taken over ``n_bootstrap`` resamples, the
pair-name means over the same resamples. The resamples depend only on ``seed`` and
``B``: every selection of cells of one pass (the per-layer table and the layer-by-layer
matrices) draws the same ones. No forward pass is repeated. Fewer than 2 batches or
``n_bootstrap = 0``: NaN bounds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transferlens.analysis.cka_estimators import MinibatchCKA, cka_from_hsic
from transferlens.analysis.stats import bootstrap_interval, index_counts


def cka_replicates(
    batch_hsic: np.ndarray,
    indices: np.ndarray,
    select: np.ndarray,
    pair_of: list[int],
    n_pairs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``(per combination [r, C, *cells], per pair name [r, n_pairs, *cells])``: the CKA
    of each resample of batches (``indices`` ``[r, B]`` batch indices drawn with
    replacement) from the per-batch HSIC ``batch_hsic`` ``[B, T, T]``; ``select``
    ``[C, *cells, 2]`` names each cell's ``(i, j)``, ``pair_of[c]`` the pair name of
    combination ``c`` (its value is the mean of its combinations'). The identity
    resample ``arange(B)`` gives the point values."""
    batch_hsic = np.asarray(batch_hsic, dtype=np.float64)
    n_batches, size = batch_hsic.shape[0], batch_hsic.shape[-1]
    counts = index_counts(np.asarray(indices), n_batches).astype(np.float64)
    sums = (counts @ batch_hsic.reshape(n_batches, -1)).reshape(-1, size, size)
    combos = cka_from_hsic(sums)[:, select[..., 0], select[..., 1]]
    return combos, pair_means(combos, pair_of, n_pairs)


def pair_means(values: np.ndarray, pair_of: Sequence[int], n_pairs: int) -> np.ndarray:
    """Each pair name's mean over its combinations: ``[r, C, *cells] -> [r, n_pairs, *cells]``
    (``pair_of[c]``: the pair name of combination ``c``)."""
    weights = np.zeros((n_pairs, len(pair_of)))
    weights[list(pair_of), np.arange(len(pair_of))] = 1.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("pc,rc...->rp...", weights, values)


def estimate(
    accumulator: MinibatchCKA,
    select: np.ndarray,
    pair_of: list[int],
    n_pairs: int,
    n_bootstrap: int,
    confidence: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Values and intervals for ``select`` (``[C, *cells, 2]`` row/column indices of the
    accumulator's ``[T, T]`` HSIC, one block per combination; ``pair_of[c]`` is the pair
    name of combination ``c``): ``values/low/high`` ``[C, *cells]`` and
    ``pair_values/pair_low/pair_high`` ``[n_pairs, *cells]`` (module docstring)."""
    hsic = accumulator.hsic_sum.cpu().numpy()[None]
    values = cka_from_hsic(hsic)[:, select[..., 0], select[..., 1]]
    pair_values = pair_means(values, pair_of, n_pairs)
    n_batches = accumulator.n_batches
    if n_bootstrap == 0 or n_batches < 2:
        no_combo, no_pair = np.full_like(values[0], np.nan), np.full_like(pair_values[0], np.nan)
        return _named(values[0], no_combo, no_combo, pair_values[0], no_pair, no_pair)
    batch_hsic = accumulator.batch_hsic().numpy()

    def statistic(indices: np.ndarray) -> np.ndarray:
        combos, pairs = cka_replicates(batch_hsic, indices, select, pair_of, n_pairs)
        rows = len(indices)
        return np.concatenate([combos.reshape(rows, -1), pairs.reshape(rows, -1)], axis=1)

    low, high = bootstrap_interval(
        statistic, n_bootstrap, confidence, seed, n=n_batches, vectorized=True
    )
    split = values[0].size
    shape_c, shape_p = values[0].shape, pair_values[0].shape
    return _named(
        values[0],
        low[:split].reshape(shape_c),
        high[:split].reshape(shape_c),
        pair_values[0],
        low[split:].reshape(shape_p),
        high[split:].reshape(shape_p),
    )


def _named(*arrays: np.ndarray) -> dict[str, np.ndarray]:
    names = ("values", "low", "high", "pair_values", "pair_low", "pair_high")
    return dict(zip(names, arrays))
