"""Common and uncommon mistakes of pairs of models (the paper's analysis 2).

For two models on the same examples every example falls in one cell of a 2x2 table:
``both_right``, ``both_wrong`` (common mistakes), ``only_first_wrong`` and
``only_second_wrong`` (uncommon mistakes). The summary number is the error consistency,
Cohen's kappa of the two correct/incorrect vectors::

    kappa = (p_o - p_e) / (1 - p_e),   p_o = (both_right + both_wrong) / n,
    p_e = p_a p_b + (1 - p_a)(1 - p_b),  p_a, p_b = the accuracies of the two models.

Degenerate case: ``p_e = 1`` (both models right on every example, or both wrong on every
one) has ``1 - p_e = 0``; kappa is then defined as 1 if the two vectors are identical and
0 otherwise (with ``p_e = 1`` they are always identical, so 1). Kappa is computed from
integer counts, ``(n agree - E) / (n^2 - E)`` with ``E = n^2 p_e``, so the test is exact.

The accuracies bound kappa (:mod:`~transferlens.analysis.kappa_bounds`, Geirhos et al.
2020): ``kappa_max`` is the largest kappa two models of these accuracies can reach, and
``kappa_ratio = kappa / kappa_max`` (NaN when ``kappa_max = 0``, where kappa is 0 too)
says how much of that room the pair uses; computed from counts as
``(n agree - E) / (n (n - |R_a - R_b|) - E)``, so ``kappa_ratio <= 1`` exactly.

Intervals: percentile bootstrap over examples (:mod:`~transferlens.analysis.stats`);
kappa and kappa_ratio share the same resamples (each resample's per-example cell codes
through :func:`~transferlens.analysis.stats.index_counts`, no forward pass repeated).
Pairs sharing a name (``PT-RIT`` over seed combinations) are averaged into one row of
:meth:`MistakesResult.to_frame` (mean counts, mean kappa, mean kappa_max, mean of the
defined kappa_ratios, and the interval of each mean under the same resampled examples);
``combine=False`` keeps one row per combination.

Inputs (models and an ordered loader, correctness vectors or
:class:`~transferlens.analysis.mistakes_inputs.Predictions`) are checked to cover the
same examples in the same order (:mod:`~transferlens.analysis.mistakes_inputs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferlens.analysis.checks import check_ordered_loader
from transferlens.analysis.kappa_bounds import (
    expected_agreement_count,
    kappa_max_from_counts,
    kappa_min_from_counts,
    margins,
)
from transferlens.analysis.mistakes_inputs import (
    Predictions,
    as_correct,
    correctness_many,
    scored_vectors,
)
from transferlens.analysis.pairs import resolve_pairs
from transferlens.analysis.stats import bootstrap_interval, check_n_bootstrap, index_counts
from transferlens.errors import UserInputError

__all__ = [
    "CELLS",
    "MistakesResult",
    "PairMistakes",
    "Predictions",
    "cell_codes",
    "correctness",
    "error_consistency",
    "kappa_from_counts",
    "kappa_ratio_from_counts",
    "mistakes",
]

CELLS = ("both_right", "both_wrong", "only_first_wrong", "only_second_wrong")


def cell_codes(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """Per example, the index in :data:`CELLS` of its cell of the 2x2 table."""
    codes = np.where(correct_a, 3, 2)  # right/wrong of a with b wrong: only_second / only_first
    codes[correct_a & correct_b] = 0
    codes[~correct_a & ~correct_b] = 1
    return codes.astype(np.int8)


def kappa_from_counts(counts: np.ndarray) -> np.ndarray:
    """Cohen's kappa from ``[..., 4]`` counts in :data:`CELLS` order (degenerate rule above)."""
    counts = np.asarray(counts, dtype=np.float64)
    both_right, both_wrong, only_first_wrong, only_second_wrong = np.moveaxis(counts, -1, 0)
    n = counts.sum(axis=-1)
    right_a = both_right + only_second_wrong
    right_b = both_right + only_first_wrong
    agree = both_right + both_wrong
    expected = right_a * right_b + (n - right_a) * (n - right_b)  # n^2 p_e
    denominator = n * n - expected
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (n * agree - expected) / denominator
    return np.where(denominator == 0, np.where(agree == n, 1.0, 0.0), kappa)


def kappa_ratio_from_counts(counts: np.ndarray) -> np.ndarray:
    """``kappa / kappa_max`` from ``[..., 4]`` counts: ``(n agree - E) / (n (n - |R_a -
    R_b|) - E)`` (the shared denominator ``n^2 - E`` cancels); 1 in the degenerate case
    ``E = n^2``, NaN where ``kappa_max = 0`` (one model always right or the other always
    wrong: kappa is 0 there and the ratio undefined)."""
    counts = np.asarray(counts, dtype=np.float64)
    n, right_a, right_b = margins(counts)
    expected = expected_agreement_count(n, right_a, right_b)
    agree = counts[..., 0] + counts[..., 1]
    room = n * (n - np.abs(right_a - right_b)) - expected
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (n * agree - expected) / room
    return np.where(n * n == expected, 1.0, np.where(room == 0, np.nan, ratio))


def error_consistency(correct_a: Any, correct_b: Any) -> float:
    """Cohen's kappa of two correctness vectors (see the module docstring)."""
    a, b = as_correct(correct_a, "correct_a"), as_correct(correct_b, "correct_b")
    if a.size != b.size:
        raise UserInputError(
            f"error consistency: correct_a and correct_b differ in length ({a.size} vs "
            f"{b.size} examples); both must be scored on the same examples in the same order"
        )
    if a.size == 0:
        raise UserInputError("error consistency of empty correctness vectors is undefined")
    return float(kappa_from_counts(np.bincount(cell_codes(a, b), minlength=4)))


def correctness(
    model: nn.Module, loader: Iterable, device: str | torch.device | None = None
) -> np.ndarray:
    """Boolean vector over the loader's examples: is the model right (top-1 for multiclass).

    The loader must keep its order (no shuffling): positions are example indices."""
    check_ordered_loader(loader, "correctness")
    return correctness_many({"model": model}, loader, device)[0]["model"]


@dataclass(frozen=True)
class PairMistakes:
    """One combination of two models: its cell per example, counts, kappa, its upper
    bound ``kappa_max`` and ``kappa_ratio = kappa / kappa_max`` (module docstring)."""

    pair: str
    first: str
    second: str
    codes: np.ndarray
    kappa: float
    kappa_low: float
    kappa_high: float
    kappa_max: float = np.nan
    kappa_ratio: float = np.nan
    kappa_ratio_low: float = np.nan
    kappa_ratio_high: float = np.nan

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=4)

    @property
    def kappa_min(self) -> float:
        """The smallest kappa the two accuracies allow (in ``[-1, 0]``)."""
        return float(kappa_min_from_counts(self.counts))

    @property
    def accuracy_first(self) -> float:
        """Fraction of the examples the first model gets right."""
        both_right, _, _, only_second_wrong = self.counts
        return float((both_right + only_second_wrong) / self.codes.size)

    @property
    def accuracy_second(self) -> float:
        """Fraction of the examples the second model gets right."""
        both_right, _, only_first_wrong, _ = self.counts
        return float((both_right + only_first_wrong) / self.codes.size)


@dataclass(frozen=True)
class MistakesResult:
    """Mistake tables for every combination, and per pair name (means; see module docstring).

    ``labels``: the class of each example (None if unknown); ``settings``:
    ``n_bootstrap``, ``confidence`` and ``seed`` of the intervals. Per pair name:
    ``pair_kappa`` (mean) and its interval ``pair_low``/``pair_high``, ``pair_kappa_max``
    (mean), ``pair_ratio`` (mean of the defined ratios) and its interval.
    """

    combinations: tuple[PairMistakes, ...]
    pair_names: tuple[str, ...]
    pair_kappa: np.ndarray
    pair_low: np.ndarray
    pair_high: np.ndarray
    labels: np.ndarray | None
    settings: dict[str, Any]
    pair_kappa_max: np.ndarray | None = None
    pair_ratio: np.ndarray | None = None
    pair_ratio_low: np.ndarray | None = None
    pair_ratio_high: np.ndarray | None = None

    def _of(self, name: str) -> list[PairMistakes]:
        return [combo for combo in self.combinations if combo.pair == name]

    def to_frame(self, combine: bool = True) -> pd.DataFrame:
        """``pair, n, both_right, both_wrong, only_first_wrong, only_second_wrong, kappa,
        kappa_low, kappa_high, kappa_max, kappa_ratio, kappa_ratio_low, kappa_ratio_high``;
        ``combine=False`` adds ``first, second`` per combination (after ``pair``) and
        ``accuracy_first, accuracy_second`` (last)."""
        rows = []
        if combine:
            for i, name in enumerate(self.pair_names):
                combos = self._of(name)
                counts = np.mean([combo.counts for combo in combos], axis=0)
                counts = counts.astype(int) if len(combos) == 1 else counts
                row = {"pair": name, "n": combos[0].codes.size, **dict(zip(CELLS, counts))}
                rows.append({**row, "kappa": self.pair_kappa[i], "kappa_low": self.pair_low[i],
                             "kappa_high": self.pair_high[i], **self._pair_bounds(i)})  # fmt: skip
        else:
            for combo in self.combinations:
                row = {
                    "pair": combo.pair,
                    "first": combo.first,
                    "second": combo.second,
                    "n": combo.codes.size,
                }
                row.update(zip(CELLS, combo.counts))
                rows.append({**row, "kappa": combo.kappa, "kappa_low": combo.kappa_low,
                             "kappa_high": combo.kappa_high, "kappa_max": combo.kappa_max,
                             "kappa_ratio": combo.kappa_ratio,
                             "kappa_ratio_low": combo.kappa_ratio_low,
                             "kappa_ratio_high": combo.kappa_ratio_high,
                             "accuracy_first": combo.accuracy_first,
                             "accuracy_second": combo.accuracy_second})  # fmt: skip
        return pd.DataFrame(rows)

    def _pair_bounds(self, i: int) -> dict[str, float]:
        """The kappa_max and kappa_ratio columns of pair name ``i`` (NaN if not computed)."""
        columns = {
            "kappa_max": self.pair_kappa_max,
            "kappa_ratio": self.pair_ratio,
            "kappa_ratio_low": self.pair_ratio_low,
            "kappa_ratio_high": self.pair_ratio_high,
        }
        return {key: np.nan if values is None else values[i] for key, values in columns.items()}

    def per_class_frame(self, combine: bool = True) -> pd.DataFrame:
        """``pair, label, n`` and the four cell counts per label (needs ``labels``)."""
        if self.labels is None:
            raise UserInputError(
                "per-class counts need labels (pass labels= or models and a loader)"
            )
        classes, label_index = np.unique(self.labels, return_inverse=True)
        frames = []
        for combo in self.combinations:
            table = np.bincount(label_index * 4 + combo.codes, minlength=4 * len(classes)).reshape(
                -1, 4
            )
            frame = pd.DataFrame(table, columns=list(CELLS))
            frame.insert(0, "n", table.sum(axis=1))
            frame.insert(0, "label", classes)
            frame.insert(0, "second", combo.second)
            frame.insert(0, "first", combo.first)
            frame.insert(0, "pair", combo.pair)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        if not combine:
            return table
        combined = table.groupby(["pair", "label"], sort=False)[["n", *CELLS]].mean().reset_index()
        if all(len(self._of(name)) == 1 for name in self.pair_names):
            combined[["n", *CELLS]] = combined[["n", *CELLS]].astype(int)
        return combined

    def indices(
        self, pair: str, cell: str, first: str | None = None, second: str | None = None
    ) -> np.ndarray:
        """Example indices (positions in the data) of ``cell`` for a pair.

        A name shared by several combinations needs ``first`` and ``second`` model keys.
        """
        if cell not in CELLS:
            raise UserInputError(f"unknown cell {cell!r}; cells: {', '.join(CELLS)}")
        combos = [
            combo
            for combo in self._of(pair)
            if (first is None or combo.first == first)
            and (second is None or combo.second == second)
        ]
        if not combos:
            known = ", ".join(f"{c.pair} ({c.first}, {c.second})" for c in self.combinations)
            raise UserInputError(
                f"no pair {pair!r} with first={first!r}, second={second!r}; pairs: {known}"
            )
        if len(combos) > 1:
            choices = ", ".join(f"({c.first}, {c.second})" for c in combos)
            raise UserInputError(
                f"pair {pair!r} has {len(combos)} combinations {choices}; pass first= and second="
            )
        return np.flatnonzero(combos[0].codes == CELLS.index(cell))


def _mean_defined(values: np.ndarray, member: np.ndarray) -> np.ndarray:
    """``[r, names]``: per pair name, the mean of its combinations' finite ``values``
    (``[r, combinations]``); NaN where none is finite."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0) @ member.T
    count = finite.astype(np.float64) @ member.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / count, np.nan)


def mistakes(
    correct: Mapping[str, Any],
    pairs: Iterable[Sequence[str]] | None = None,
    *,
    loader: Iterable | None = None,
    labels: Any = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> MistakesResult:
    """Mistake tables for ``pairs`` of ``(name, first, second)`` keys of ``correct``.

    ``correct`` maps keys to correctness vectors over the same examples, to
    :class:`Predictions` (predictions with the labels they were scored against), or to
    models (then ``loader`` is required and must keep its order; one pass, each model
    one forward per batch). ``labels`` (for per-class counts) default to the loader's or
    the predictions' class-index labels. Without ``pairs``: every pair of keys, named
    ``"<first>-<second>"``. ``n_bootstrap=0`` gives NaN intervals. Streams of different
    lengths, or predictions scored against different labels, are refused with one line
    naming the two models.
    """
    check_n_bootstrap(n_bootstrap)
    if not correct:
        raise UserInputError("mistakes: no models or correctness vectors given")
    keys = list(correct)
    combos = resolve_pairs(keys, pairs)
    vectors, stream_labels = scored_vectors(correct, loader, device)
    if labels is None and stream_labels is not None and stream_labels.ndim == 1:
        labels = stream_labels
    n = len(next(iter(vectors.values())))
    if labels is not None:
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (n,):
            raise UserInputError(
                f"labels must have one entry per example ({n}); got shape {labels.shape}"
            )
    codes = [cell_codes(vectors[a], vectors[b]) for _, a, b in combos]
    names = list(dict.fromkeys(name for name, _, _ in combos))
    member = np.zeros((len(names), len(combos)))
    member[[names.index(name) for name, _, _ in combos], np.arange(len(combos))] = 1.0
    membership = member / member.sum(axis=1, keepdims=True)
    # One-hot cells of every combination side by side: resampled counts are one matmul.
    one_hot = np.concatenate([np.eye(4)[code] for code in codes], axis=1)  # [n, 4 C]

    def statistic(indices: np.ndarray) -> np.ndarray:
        """Per resample: kappa per combination, per name, then the same for the ratio."""
        counts = (index_counts(indices, n).astype(np.float64) @ one_hot).reshape(
            len(indices), -1, 4
        )
        kappas = kappa_from_counts(counts)
        ratios = kappa_ratio_from_counts(counts)
        means = [kappas @ membership.T, ratios, _mean_defined(ratios, member)]
        return np.concatenate([kappas, *means], axis=1)

    values = statistic(np.arange(n)[None])[0]
    if n_bootstrap:
        low, high = bootstrap_interval(
            statistic, n_bootstrap, confidence, seed, n=n, vectorized=True
        )
    else:
        low = high = np.full(values.shape, np.nan)
    c, k = len(combos), len(names)
    kappa_at, ratio_at = np.arange(c), c + k + np.arange(c)  # columns of `statistic`
    counts = np.stack([np.bincount(code, minlength=4) for code in codes])
    kappa_maxes = kappa_max_from_counts(counts)

    def combination(i: int, name: str, first: str, second: str) -> PairMistakes:
        kappa, ratio = kappa_at[i], ratio_at[i]
        return PairMistakes(
            name, first, second, codes[i],
            float(values[kappa]), float(low[kappa]), float(high[kappa]),
            kappa_max=float(kappa_maxes[i]), kappa_ratio=float(values[ratio]),
            kappa_ratio_low=float(low[ratio]), kappa_ratio_high=float(high[ratio]),
        )  # fmt: skip

    results = tuple(combination(i, *combo) for i, combo in enumerate(combos))
    names_kappa, names_ratio = slice(c, c + k), slice(2 * c + k, 2 * c + 2 * k)
    settings = {"n_bootstrap": n_bootstrap, "confidence": confidence, "seed": seed}
    return MistakesResult(
        results, tuple(names), values[names_kappa], low[names_kappa], high[names_kappa],
        labels, settings, membership @ kappa_maxes,
        values[names_ratio], low[names_ratio], high[names_ratio],
    )  # fmt: skip
