"""Deterministic, stratified train/test splits and subsamples (for data sets without a split).

Both rules use numpy's legacy ``RandomState`` (its stream is fixed across numpy versions
and machines) and depend only on the labels in their given order; callers sort the
files first, so the result depends only on the file names.

Split (:func:`stratified_split`): with ``rng = RandomState(seed)``, for each class ``c``
in increasing order, ``order_c = rng.permutation(n_c)`` over the class's items (in
their given order); the first ``floor(test_fraction * n_c + 1/2)`` of ``order_c`` go to
test, the rest to train (a class of two or more items keeps at least one item on each
side when ``0 < test_fraction < 1``).

Subsample (:func:`stratified_subsample`): with ``rng = RandomState([seed, 1])``, each
item gets a within-class rank ``r`` from ``rng.permutation(n_c)`` (classes in
increasing order) and the key ``(r + 1/2) / n_c``; the ``k`` items of smallest key are
kept (ties: smaller class first). Every prefix is stratified: class ``c`` keeps
``k * n_c / n`` items up to rounding.
"""

from __future__ import annotations

import numpy as np

from transferlens.errors import UserInputError

__all__ = ["stratified_split", "stratified_subsample"]


def _seed(seed: int) -> int:
    return int(seed) % (2**32)


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``, each sorted, of a seeded stratified split (module doc)."""
    if not 0.0 < test_fraction < 1.0:
        raise UserInputError(
            f"test_fraction must be strictly between 0 and 1 (got {test_fraction})"
        )
    labels = np.asarray(labels)
    rng = np.random.RandomState(_seed(seed))
    test_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        order = members[rng.permutation(len(members))]
        count = int(np.floor(test_fraction * len(members) + 0.5))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        test_parts.append(order[:count])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, dtype=np.int64)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test] = True
    return np.flatnonzero(~is_test), test


def stratified_subsample(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``size`` items, stratified by label (module doc)."""
    labels = np.asarray(labels)
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.RandomState([_seed(seed), 1])
    keys = np.empty(len(labels), dtype=np.float64)
    classes = np.unique(labels)
    class_rank = np.empty(len(labels), dtype=np.int64)
    for position, label in enumerate(classes):
        members = np.flatnonzero(labels == label)
        keys[members] = (rng.permutation(len(members)) + 0.5) / len(members)
        class_rank[members] = position
    chosen = np.lexsort((class_rank, keys))[:size]
    return np.sort(chosen)
