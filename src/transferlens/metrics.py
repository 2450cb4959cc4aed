"""The paper's two target metrics and losses, selected by the task of a data set.

* ``multiclass``: cross-entropy loss, top-1 accuracy (a fraction in [0, 1]).
* ``multilabel``: binary cross-entropy over the labels, mean over labels of the
  ROC-AUC (CheXpert's metric), also in [0, 1].

Accuracy is a ratio of sums (correct / n) and so streams and all-reduces; ROC-AUC
needs all scores at once, so callers gather scores and targets first.
"""

from __future__ import annotations

from typing import Literal

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
