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

Intervals: percentile bootstrap over examples (:mod:`~transferlens.analysis.stats`).
Pairs sharing a name (``PT-RIT`` over seed combinations) are averaged into one row of
:meth:`MistakesResult.to_frame` (mean counts, mean kappa, and the interval of that mean
under the same resampled examples); ``combine=False`` keeps one row per combination.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferlens.analysis.features import split_batch
from transferlens.analysis.pairs import resolve_pairs
from transferlens.analysis.stats import bootstrap_interval, check_n_bootstrap, index_counts
from transferlens.devices import resolve_device
from transferlens.errors import UserInputError
from transferlens.evaluation import evaluation_mode, model_device

CELLS = ("both_right", "both_wrong", "only_first_wrong", "only_second_wrong")


def _as_correct(values: Any, name: str) -> np.ndarray:
    """A 1-D boolean vector from bools, 0/1 numbers, numpy arrays or tensors."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise UserInputError(f"{name}: correctness must be a 1-D vector (got shape {array.shape})")
    if array.dtype != bool:
        if array.size and not np.isin(array, (0, 1)).all():
            raise UserInputError(f"{name}: correctness must be booleans or 0/1 (got other values)")
        array = array.astype(bool)
    return array


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


def error_consistency(correct_a: Any, correct_b: Any) -> float:
    """Cohen's kappa of two correctness vectors (see the module docstring)."""
    a, b = _as_correct(correct_a, "correct_a"), _as_correct(correct_b, "correct_b")
    if a.size != b.size:
        raise UserInputError(f"correctness vectors differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise UserInputError("error consistency of empty correctness vectors is undefined")
    return float(kappa_from_counts(np.bincount(cell_codes(a, b), minlength=4)))


def _is_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Top-1 for class-index targets; multi-hot targets: every label right (logit > 0)."""
    if y.ndim == 1:
        return logits.argmax(dim=1) == y
    return ((logits > 0) == (y > 0.5)).all(dim=1)


def _correctness_many(
    models: Mapping[str, nn.Module], loader: Iterable, device: Any
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One pass: each model's correctness vector and the targets (one forward per batch each)."""
    if device is not None:
        device = resolve_device(device)
        for model in models.values():
            model.to(device)
    correct: dict[str, list[np.ndarray]] = {key: [] for key in models}
    targets = []
    with evaluation_mode(models.values()):
        for batch in loader:
            x, y = split_batch(batch)
            if y is None:
                raise UserInputError("the loader must yield (inputs, targets) to score correctness")
            with torch.inference_mode():
                for key, model in models.items():
                    here = model_device(model)
                    logits = model(x.to(here, non_blocking=True))
                    correct[key].append(_is_correct(logits, y.to(here)).cpu().numpy())
            targets.append(y.cpu().numpy())
    if not targets:
        raise UserInputError("the loader yielded no batches")
    return {key: np.concatenate(parts) for key, parts in correct.items()}, np.concatenate(targets)


def correctness(
    model: nn.Module, loader: Iterable, device: str | torch.device | None = None
) -> np.ndarray:
    """Boolean vector over the loader's examples: is the model right (top-1 for multiclass)."""
    return _correctness_many({"model": model}, loader, device)[0]["model"]


@dataclass(frozen=True)
class PairMistakes:
    """One combination of two models: its cell per example, counts and kappa."""

    pair: str
    first: str
    second: str
    codes: np.ndarray
    kappa: float
    kappa_low: float
    kappa_high: float

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=4)


@dataclass(frozen=True)
class MistakesResult:
    """Mistake tables for every combination, and per pair name (means; see module docstring).

    ``labels``: the class of each example (None if unknown); ``settings``:
    ``n_bootstrap``, ``confidence`` and ``seed`` of the intervals.
    """

    combinations: tuple[PairMistakes, ...]
    pair_names: tuple[str, ...]
    pair_kappa: np.ndarray
    pair_low: np.ndarray
    pair_high: np.ndarray
    labels: np.ndarray | None
    settings: dict[str, Any]

    def _of(self, name: str) -> list[PairMistakes]:
        return [combo for combo in self.combinations if combo.pair == name]

    def to_frame(self, combine: bool = True) -> pd.DataFrame:
        """``pair, n, both_right, both_wrong, only_first_wrong, only_second_wrong, kappa,
        kappa_low, kappa_high``; ``combine=False`` adds ``first, second`` per combination."""
        rows = []
        if combine:
            for i, name in enumerate(self.pair_names):
                combos = self._of(name)
                counts = np.mean([combo.counts for combo in combos], axis=0)
                counts = counts.astype(int) if len(combos) == 1 else counts
                row = {"pair": name, "n": combos[0].codes.size, **dict(zip(CELLS, counts))}
                rows.append({**row, "kappa": self.pair_kappa[i], "kappa_low": self.pair_low[i],
                             "kappa_high": self.pair_high[i]})  # fmt: skip
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
                             "kappa_high": combo.kappa_high})  # fmt: skip
        return pd.DataFrame(rows)

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

    ``correct`` maps keys to correctness vectors over the same examples, or to models
    (then ``loader`` is required; one pass, each model one forward per batch; ``labels``
    default to the loader's class-index targets). Without ``pairs``: every pair of keys,
    named ``"<first>-<second>"``. ``n_bootstrap=0`` gives NaN intervals.
    """
    check_n_bootstrap(n_bootstrap)
    if not correct:
        raise UserInputError("mistakes: no models or correctness vectors given")
    keys = list(correct)
    combos = resolve_pairs(keys, pairs)
    if all(isinstance(value, nn.Module) for value in correct.values()):
        if loader is None:
            raise UserInputError("mistakes(models, loader=...): a loader is needed to score models")
        vectors, targets = _correctness_many(dict(correct), loader, device)
        if labels is None and targets.ndim == 1:
            labels = targets
    else:
        vectors = {key: _as_correct(value, key) for key, value in correct.items()}
    sizes = {key: vector.size for key, vector in vectors.items()}
    n = next(iter(sizes.values()))
    if len(set(sizes.values())) != 1 or n == 0:
        raise UserInputError(
            f"correctness vectors must be non-empty and of one length (got {sizes})"
        )
    if labels is not None:
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (n,):
            raise UserInputError(
                f"labels must have one entry per example ({n}); got shape {labels.shape}"
            )
    codes = [cell_codes(vectors[a], vectors[b]) for _, a, b in combos]
    names = list(dict.fromkeys(name for name, _, _ in combos))
    membership = np.zeros((len(names), len(combos)))
    membership[[names.index(name) for name, _, _ in combos], np.arange(len(combos))] = 1.0
    membership /= membership.sum(axis=1, keepdims=True)
    # One-hot cells of every combination side by side: resampled counts are one matmul.
    one_hot = np.concatenate([np.eye(4)[code] for code in codes], axis=1)  # [n, 4 C]

    def statistic(indices: np.ndarray) -> np.ndarray:
        counts = (index_counts(indices, n).astype(np.float64) @ one_hot).reshape(
            len(indices), -1, 4
        )
        kappas = kappa_from_counts(counts)
        return np.concatenate([kappas, kappas @ membership.T], axis=1)

    kappas = statistic(np.arange(n)[None])[0]
    if n_bootstrap:
        low, high = bootstrap_interval(
            statistic, n_bootstrap, confidence, seed, n=n, vectorized=True
        )
    else:
        low = high = np.full(kappas.shape, np.nan)
    results = tuple(
        PairMistakes(name, a, b, code, float(kappas[i]), float(low[i]), float(high[i]))
        for i, ((name, a, b), code) in enumerate(zip(combos, codes))
    )
    split = len(combos)
    settings = {"n_bootstrap": n_bootstrap, "confidence": confidence, "seed": seed}
    return MistakesResult(
        results, tuple(names), kappas[split:], low[split:], high[split:], labels, settings
    )
