"""Permutation null of minibatch CKA: is a pair's CKA above what unrelated rows give?

The estimator (:class:`~transferlens.analysis.cka_estimators.MinibatchCKA`) is
``CKA_ab = S_ab / sqrt(S_aa S_bb)`` with ``S_ab = sum_t HSIC_1(K_a^t, K_b^t)`` over the
batches ``t``. The null hypothesis: within each batch, which example of one model goes
with which example of the other carries no information. Permuting the examples of model
``b`` inside batch ``t`` by ``P`` turns ``K_b^t`` into ``P K_b^t P^T``; U-centring
commutes with it, and ``S_aa``, ``S_bb`` do not change, so only the numerator moves.
Within-batch permutation is the exact null of this estimator (and the only one it
allows: the one pass forms no Gram entry between examples of different batches).

Draws: for each draw and batch, one uniform permutation per model, the first model's
the identity. Every pair's statistic depends only on the relative permutation of its two
models, which is then uniform: for each pair (a ``cka_pairs`` row) this is exactly the
test that permutes the rows of one side. A pair name's row (the mean CKA over its seed
pairs, a ``cka`` row) is tested with the same draws: the null permutes every pair at
once, each model's rows by one permutation (a consistent relabelling even where a
model is in several pairs), and the statistic is the mean of the pairs' CKA.

``p = (1 + #{null >= observed}) / (1 + n_permutations)`` (Phipson & Smyth 2010: never
0); NaN where the CKA is NaN or without draws. The null and the observed value used in
the comparison come from the same kept float32 terms by the same code (a draw that
happens to be the identity ties with it), not from the float64 sums behind ``cka``:
a comparison is off only for a draw within float32 rounding (~1e-6 relative) of the
observation. No forward pass is repeated: the pass keeps
each batch's U-centred Grams (their upper triangles, :meth:`MinibatchCKA.batch_grams`);
each draw costs one gather of every Gram but the first model's, and the inner products
of the rows that some cell compares (:func:`linked_rows`: per layer for ``cka_many``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from transferlens.analysis.cka_bootstrap import pair_means
from transferlens.analysis.cka_kernels import _ieee_float32_products, upper_flat_index

# Separates the permutations' random stream from the bootstrap's (same user seed).
PERMUTATION_STREAM = 0x5045524D
# Draws gathered before one product, bounding memory at (chunk x T x n^2 / 2) floats.
_DRAWS_PER_CHUNK = 16


def permutation_p_values(
    batches: Sequence[Tensor],
    sizes: Sequence[int],
    select: np.ndarray,
    pair_of: Sequence[int],
    n_pairs: int,
    n_permutations: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """p-values of every combination's and every pair name's CKA (module docstring).

    ``batches``: per batch, the ``[T, n (n - 1) / 2]`` upper triangles of the U-centred
    Grams; ``sizes``: the number of rows of each model, in the order of ``T`` (a model's
    rows are consecutive and share its permutations); ``select``: ``[C, *cells, 2]``
    row/column indices of each combination's cells; ``pair_of``: each combination's pair
    name. Returns ``([C, *cells], [n_pairs, *cells])``; NaN everywhere for 0 draws.
    """
    cells = select.shape[1:-1]
    if n_permutations == 0 or not batches:
        return np.full((len(select), *cells), np.nan), np.full((n_pairs, *cells), np.nan)
    with _one_thread(batches[0].device):
        return _p_values(batches, sizes, select, pair_of, n_pairs, n_permutations, seed)


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """One torch thread on a CPU: the gathers are numpy's (one thread) and each product
    is small, so more threads only wait on each other (2-3x slower on 2 busy cores)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _p_values(
    batches: Sequence[Tensor],
    sizes: Sequence[int],
    select: np.ndarray,
    pair_of: Sequence[int],
    n_pairs: int,
    n_permutations: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    count = batches[0].shape[0]
    groups = linked_rows(select, count)
    observed = np.zeros((count, count))
    null = np.zeros((n_permutations, count, count))
    rng = np.random.default_rng(np.random.SeedSequence([seed, PERMUTATION_STREAM]))
    bounds = np.cumsum([0, *sizes])
    for terms in batches:
        n = _rows_of(terms.shape[1])
        # HSIC_1 = <U(K), U(L)> / (n (n - 3)), twice the upper triangles' inner product.
        weight = 2.0 / (n * (n - 3))
        _add_products(observed[None], terms[None], groups, weight)
        orders = rng.permuted(np.tile(np.arange(n), (n_permutations, len(sizes) - 1, 1)), axis=-1)
        full = _symmetric(terms, n)
        for start in range(0, n_permutations, _DRAWS_PER_CHUNK):
            chunk = orders[start : start + _DRAWS_PER_CHUNK]
            permuted = _permuted(terms, full, bounds, chunk)
            _add_products(null[start : start + len(chunk)], permuted, groups, weight)
    cka_observed = _cka(observed[None], observed, select)[0]
    cka_null = _cka(null, observed, select)
    pair_observed = pair_means(cka_observed[None], pair_of, n_pairs)[0]
    pair_null = pair_means(cka_null, pair_of, n_pairs)
    return _p_value(cka_null, cka_observed), _p_value(pair_null, pair_observed)


def linked_rows(select: np.ndarray, count: int) -> list[np.ndarray]:
    """The rows ``0..count-1`` that some cell of ``select`` compares, in groups that no
    cell links (connected components): only products within a group are needed, so for
    ``cka_many`` (the same layer in every model) one group per layer, ``L`` times fewer
    products than every row with every row."""
    parent = list(range(count))

    def root(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]
            row = parent[row]
        return row

    for first, second in select.reshape(-1, 2):
        parent[root(int(first))] = root(int(second))
    used = np.unique(select)
    found: dict[int, list[int]] = {}
    for row in used:
        found.setdefault(root(int(row)), []).append(int(row))
    return [np.asarray(rows) for rows in found.values()]


def _rows_of(upper: int) -> int:
    """``n`` of an ``n x n`` matrix whose strict upper triangle has ``upper`` entries."""
    return int(round((1.0 + (1.0 + 8.0 * upper) ** 0.5) / 2.0))


def _permuted(terms: Tensor, full: Tensor, bounds: np.ndarray, orders: np.ndarray) -> Tensor:
    """``[draws, T, m]``: each model's triangles with its rows and columns permuted.

    The first model keeps its order; model ``g`` of draw ``r`` takes ``orders[r, g-1]``:
    entry ``(i, j)`` of the permuted matrix is entry ``(order[i], order[j])`` of the kept
    one, read from the ``full`` symmetric ``[T, n * n]`` matrices.
    """
    n = orders.shape[-1]
    rows, cols = _upper_rows_cols(n)
    out = terms.new_empty((len(orders), *terms.shape))
    out[:, : bounds[1]] = terms[: bounds[1]]
    index = np.empty(len(rows), dtype=np.int32)
    for draw, draw_orders in enumerate(orders.astype(np.int32)):
        for model, order in enumerate(draw_orders, 1):
            np.add(np.take(order * n, rows), np.take(order, cols), out=index)
            start, stop = bounds[model], bounds[model + 1]
            _take_into(out[draw, start:stop], full[start:stop], index)
    return out


def _upper_rows_cols(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each strict-upper-triangle entry, row by row (int32)."""
    upper = upper_flat_index(n).numpy()
    return (upper // n).astype(np.int32), (upper % n).astype(np.int32)


def _symmetric(terms: Tensor, n: int) -> Tensor:
    """The full ``[T, n * n]`` symmetric matrices (zero diagonal) of upper triangles."""
    upper = upper_flat_index(n, terms.device)
    full = terms.new_zeros((terms.shape[0], n * n))
    full[:, upper] = terms
    lower = (upper % n) * n + upper // n
    full[:, lower] = terms
    return full


def _take_into(out: Tensor, block: Tensor, index: np.ndarray) -> None:
    """``out[:] = block[:, index]``; numpy's take on a CPU (about twice torch's speed
    there; ``mode="clip"`` writes straight into ``out``, the indices being valid)."""
    if block.device.type == "cpu":
        np.take(block.numpy(), index, axis=1, out=out.numpy(), mode="clip")
    else:
        torch.index_select(block, 1, torch.as_tensor(index, device=block.device), out=out)


def _add_products(
    sums: np.ndarray, stack: Tensor, groups: Sequence[np.ndarray], weight: float
) -> None:
    """``sums[d, i, j] += weight * <stack[d, i], stack[d, j]>`` for ``i, j`` of one group
    (float32 products, accumulated in float64)."""
    with _ieee_float32_products():
        for rows in groups:
            products = torch.bmm(*_rows_and_transpose(stack, rows)).double().cpu().numpy()
            sums[:, rows[:, None], rows[None, :]] += weight * products


def _rows_and_transpose(stack: Tensor, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """``stack[:, rows]`` and its transpose; a strided view (no copy: the product reads
    it in place) when ``rows`` are evenly spaced, as one layer's rows of every model."""
    steps = np.diff(rows)
    if len(rows) == 1 or (steps[0] > 0 and np.all(steps == steps[0])):
        step = int(steps[0]) if len(rows) > 1 else 1
        part = stack[:, int(rows[0]) : int(rows[-1]) + 1 : step]
    else:
        part = stack[:, torch.as_tensor(rows, device=stack.device)]
    return part, part.transpose(1, 2)


def _cka(sums: np.ndarray, observed: np.ndarray, select: np.ndarray) -> np.ndarray:
    """``[draws, C, *cells]`` CKA of each draw's HSIC sums; the denominators are the
    observed ``S_aa``, ``S_bb`` (unchanged by any permutation)."""
    diagonal = np.diagonal(observed)
    first, second = select[..., 0], select[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(diagonal[first]) * np.sqrt(diagonal[second])
        return sums[:, first, second] / scale


def _p_value(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``(1 + #{null >= observed}) / (1 + draws)`` over axis 0; NaN where observed is."""
    exceed = (null >= observed[None]).sum(axis=0)
    p = (1.0 + exceed) / (1.0 + len(null))
    return np.where(np.isnan(observed), np.nan, p)
