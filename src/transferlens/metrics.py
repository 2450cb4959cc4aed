"""The paper's two target metrics and losses, selected by the task of a data set.

* ``multiclass``: cross-entropy loss, top-1 accuracy (a fraction in [0, 1]).
* ``multilabel``: binary cross-entropy over the labels, mean over labels of the
  ROC-AUC (CheXpert's metric), also in [0, 1].

Accuracy is a ratio of sums (correct / n) and so streams and all-reduces; ROC-AUC
needs all scores at once, so callers gather scores and targets first.

:class:`ExampleOutcomes` is what the metric needs of each example (correctness, or
scores and labels), kept by an evaluation so that a bootstrap over the examples never
repeats a forward pass; :func:`resampled_task_metric` is the metric of resampled
examples (rows of bootstrap indices), from each example's count in a resample for
ROC-AUC (:func:`label_auc_of_counts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Task = Literal["multiclass", "multilabel"]
TASKS: tuple[str, ...] = ("multiclass", "multilabel")


def task_loss(
    logits: torch.Tensor, targets: torch.Tensor, task: Task, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy (multiclass; targets are class indices or soft rows) or BCE (multilabel)."""
    if task == "multiclass":
        return F.cross_entropy(logits.float(), targets, reduction=reduction)
    if task == "multilabel":
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
        loss = loss.mean(dim=1)
        return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def correct_predictions(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Boolean vector: is the top-1 prediction the target class (multiclass)."""
    return logits.argmax(dim=1) == targets


def binary_roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC-AUC of one binary label by the Mann-Whitney U statistic, ties given half credit.

    AUC = (sum of the ranks of the positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
    with average ranks for tied scores (this equals scikit-learn's roc_auc_score).
    Undefined (NaN) when only one class is present.
    """
    scores = scores.detach().double().flatten().cpu()
    labels = labels.detach().flatten().cpu() > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # Average the ranks inside each run of tied scores.
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    rank_sums = torch.zeros(counts.numel(), dtype=torch.float64).index_add_(
        0, inverse, ranks[order]
    )
    ranks[order] = (rank_sums / counts)[inverse]
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def mean_roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over labels (columns) of the binary ROC-AUC; labels with one class are skipped."""
    values = [binary_roc_auc(scores[:, k], targets[:, k]) for k in range(targets.shape[1])]
    defined = [value for value in values if value == value]
    return float(sum(defined) / len(defined)) if defined else float("nan")


def task_metric(logits: torch.Tensor, targets: torch.Tensor, task: Task) -> float:
    """Top-1 accuracy (multiclass) or mean ROC-AUC (multilabel) over the whole set."""
    if task == "multiclass":
        return (
            float(correct_predictions(logits, targets).double().mean())
            if len(targets)
            else float("nan")
        )
    if task == "multilabel":
        return mean_roc_auc(logits, targets)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


@dataclass(frozen=True)
class ExampleOutcomes:
    """What the task metric needs of each of ``n`` examples, in data-set order.

    ``multiclass``: ``correct`` ``[n]`` bool (top-1 prediction right); ``multilabel``:
    ``scores`` ``[n, K]`` (logits) and ``labels`` ``[n, K]`` bool. The others are None.
    """

    task: Task
    correct: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.correct if self.task == "multiclass" else self.labels)

    @property
    def terms(self) -> np.ndarray | None:
        """``[n]`` float64 terms t_i whose mean over the examples is the metric (accuracy:
        t_i = correctness), or None when the metric is no such mean (ROC-AUC)."""
        if self.task != "multiclass":
            return None
        return np.asarray(self.correct, dtype=np.float64)

    @cached_property
    def ranked_labels(self) -> tuple[RankedLabel, ...]:
        """Each label's examples ranked by score (multilabel), once for every resample."""
        return tuple(
            RankedLabel.of(self.scores[:, k], self.labels[:, k])
            for k in range(self.labels.shape[1])
        )


def resample_counts(indices: np.ndarray, n: int) -> np.ndarray:
    """``[n, r]`` int32: how often example i appears in resample row q of ``indices``
    ``[r, m]``. Example-major, so that taking a label's examples in score order copies
    whole rows (gathering the columns of ``[r, n]`` counts is twice as slow at n = 50k);
    one bincount per resample keeps each one's writes in cache."""
    indices = np.asarray(indices)
    counts = np.empty((n, indices.shape[0]), dtype=np.int32)  # counts <= m < 2**31
    for row, drawn in enumerate(indices):
        counts[:, row] = np.bincount(drawn, minlength=n)
    return counts


@dataclass(frozen=True)
class RankedLabel:
    """One binary label's examples ranked once, for :func:`label_auc_of_counts`:
    ``positives`` (example indices), ``negatives`` (example indices, ascending score),
    and per positive the number of negatives scoring below it (``below``) and not
    above it (``not_above``)."""

    positives: np.ndarray
    negatives: np.ndarray
    below: np.ndarray
    not_above: np.ndarray

    @property
    def ties(self) -> bool:
        """Does some positive score equal some negative score?"""
        return bool(np.any(self.below != self.not_above))

    @classmethod
    def of(cls, scores: np.ndarray, labels: np.ndarray) -> RankedLabel:
        scores = np.asarray(scores, dtype=np.float64).ravel()
        positive = np.asarray(labels).ravel() > 0.5
        negatives = np.flatnonzero(~positive)
        negatives = negatives[np.argsort(scores[negatives], kind="stable")]
        positives = np.flatnonzero(positive)
        ranked = scores[negatives]
        return cls(
            positives=positives,
            negatives=negatives,
            below=np.searchsorted(ranked, scores[positives], side="left"),
            not_above=np.searchsorted(ranked, scores[positives], side="right"),
        )


def label_auc_of_counts(label: RankedLabel, counts: np.ndarray) -> np.ndarray:
    """ROC-AUC of one label on each resample q given by the example counts ``[n, r]``
    (:func:`resample_counts`), NaN where a resample holds one class only.

    U = sum_{i pos, j neg} c_i c_j ([s_i > s_j] + [s_i = s_j] / 2): with C the
    cumulative resampled count of the negatives in ascending score (C[0] = 0), positive
    i adds c_i (C[below_i] + C[not_above_i]) / 2, and AUC = U / (n_pos n_neg) over the
    resample. Every sum is of integers (one halving at the end), exact in int64, so the
    value is the rank formula's on the resampled rows bit for bit.
    """
    cumulative = np.zeros((label.negatives.size + 1, counts.shape[1]), dtype=counts.dtype)
    np.cumsum(counts[label.negatives], axis=0, out=cumulative[1:])
    positive_counts = counts[label.positives]
    below = cumulative[label.below]
    if label.ties:  # (C[below] + C[not_above]) / 2, both <= m: no int32 overflow
        around = below + cumulative[label.not_above]
        pairs = 0.5 * np.einsum("jq,jq->q", positive_counts, around, dtype=np.int64)
    else:  # no positive ties a negative: C[below] = C[not_above], the same integer sum
        pairs = np.einsum("jq,jq->q", positive_counts, below, dtype=np.int64).astype(np.float64)
    total = positive_counts.sum(axis=0, dtype=np.int64) * cumulative[-1].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / np.where(total > 0, total, 1), np.nan)


def resampled_roc_auc(scores: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """ROC-AUC of one binary label on the rows ``indices[q]`` (with repeats) of each
    resample q of ``indices`` ``[r, m]``: what :func:`binary_roc_auc` gives on
    ``scores[indices[q]]``, NaN where a resample holds one class only
    (:func:`label_auc_of_counts`: the Mann-Whitney count with ties given half credit,
    from each example's count in the resample)."""
    scores = np.asarray(scores).ravel()
    label = RankedLabel.of(scores, labels)
    return label_auc_of_counts(label, resample_counts(indices, scores.size))


def resampled_task_metric(outcomes: ExampleOutcomes, indices: np.ndarray) -> np.ndarray:
    """The task metric of each resample ``indices[q]`` (rows of ``[r, m]``, repeats
    allowed): accuracy = resampled correct count / m, or the mean over labels of
    :func:`resampled_roc_auc` (labels with one class in a resample left out, as
    :func:`mean_roc_auc` does; NaN when none is left). Equals :func:`task_metric` of
    the resampled rows, bit for bit."""
    indices = np.asarray(indices)
    if outcomes.task == "multiclass":
        hits = np.count_nonzero(np.asarray(outcomes.correct, dtype=bool)[indices], axis=1)
        return hits / max(indices.shape[1], 1)
    if outcomes.task != "multilabel":
        raise ValueError(f"unknown task {outcomes.task!r}; expected one of {TASKS}")
    total = np.zeros(indices.shape[0])
    defined = np.zeros(indices.shape[0], dtype=np.int64)
    counts = resample_counts(indices, outcomes.n)  # one count per example, for every label
    for label in outcomes.ranked_labels:  # label by label: mean_roc_auc's summation order
        auc = label_auc_of_counts(label, counts)
        present = ~np.isnan(auc)
        total[present] += auc[present]
        defined += present
    with np.errstate(invalid="ignore"):
        return np.where(defined > 0, total / np.maximum(defined, 1), np.nan)
