"""What the mistakes analysis compares, checked to cover the same examples in one order.

Two models are compared example by example, so both must be scored on the same
examples in the same order. Three ways in, each checked:

* models and a loader: one pass, every model one forward per batch, so each model sees
  the very same batches; a loader that draws examples in a random order is refused
  (:func:`~transferlens.analysis.checks.check_ordered_loader`);
* correctness vectors (bools or 0/1, one per example): their lengths must agree;
* :class:`Predictions` (a model's predictions with the labels it was scored against):
  lengths, and the labels themselves, must agree between models.

Each refusal is one line naming the two models that differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlens.analysis.checks import check_ordered_loader
from transferlens.analysis.features import split_batch
from transferlens.devices import resolve_device
from transferlens.errors import UserInputError
from transferlens.evaluation import evaluation_mode, model_device

SAME_EXAMPLES = "every model must be scored on the same examples in the same order"


@dataclass(frozen=True)
class Predictions:
    """One model's predictions and the labels they were scored against.

    ``predicted``: ``[n]`` class indices, or ``[n, C]`` scores (top-1 = argmax; with
    ``[n, C]`` multi-hot ``labels``, an example is right when every label is, score > 0).
    ``labels``: ``[n]`` class indices or ``[n, C]`` multi-hot targets. Arrays or tensors.
    """

    predicted: Any
    labels: Any


def as_array(values: Any) -> np.ndarray:
    """A numpy array from a list, an array or a tensor (moved to the CPU)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def as_correct(values: Any, name: str) -> np.ndarray:
    """A 1-D boolean vector from bools, 0/1 numbers, numpy arrays or tensors."""
    array = as_array(values)
    if array.ndim != 1:
        raise UserInputError(f"{name}: correctness must be a 1-D vector (got shape {array.shape})")
    if array.dtype != bool:
        if array.size and not np.isin(array, (0, 1)).all():
            raise UserInputError(f"{name}: correctness must be booleans or 0/1 (got other values)")
        array = array.astype(bool)
    return array


def is_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Top-1 for class-index targets; multi-hot targets: every label right (logit > 0)."""
    if y.ndim == 1:
        return logits.argmax(dim=1) == y
    return ((logits > 0) == (y > 0.5)).all(dim=1)


def predictions_correct(scored: Predictions, name: str) -> np.ndarray:
    """The correctness vector of :class:`Predictions` (lengths checked)."""
    predicted, labels = as_array(scored.predicted), as_array(scored.labels)
    if predicted.ndim not in (1, 2) or labels.ndim not in (1, 2):
        raise UserInputError(
            f"{name}: predictions must be [n] or [n, C] and labels [n] or [n, C] "
            f"(got {predicted.shape} and {labels.shape})"
        )
    if predicted.shape[0] != labels.shape[0]:
        raise UserInputError(
            f"{name}: {predicted.shape[0]} predictions but {labels.shape[0]} labels"
        )
    if predicted.ndim == 1:
        if labels.ndim != 1:
            raise UserInputError(f"{name}: class-index predictions need [n] class-index labels")
        return predicted == labels
    return is_correct(torch.as_tensor(predicted), torch.as_tensor(labels)).numpy()


def correctness_many(
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
                    correct[key].append(is_correct(logits, y.to(here)).cpu().numpy())
            targets.append(y.cpu().numpy())
    if not targets:
        raise UserInputError("the loader yielded no batches")
    return {key: np.concatenate(parts) for key, parts in correct.items()}, np.concatenate(targets)


def check_same_length(vectors: Mapping[str, np.ndarray]) -> int:
    """The common number of examples of ``vectors``; one line naming two models otherwise."""
    keys = list(vectors)
    first = keys[0]
    n = len(vectors[first])
    for key in keys[1:]:
        if len(vectors[key]) != n:
            raise UserInputError(
                f"mistakes: {first!r} has {n} examples but {key!r} has {len(vectors[key])} "
                f"(different lengths); {SAME_EXAMPLES}"
            )
    if n == 0:
        raise UserInputError(f"mistakes: {first!r} has no examples (empty correctness vector)")
    return n


def check_same_labels(labels: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """The labels the streams share (None if none came with them); one line naming the
    two models whose labels differ otherwise (lengths are checked before)."""
    if not labels:
        return None
    keys = list(labels)
    first, reference = keys[0], labels[keys[0]]
    for key in keys[1:]:
        other = labels[key]
        if other.shape != reference.shape or not np.array_equal(other, reference):
            differs = _differing_rows(reference, other)
            raise UserInputError(
                f"mistakes: {first!r} and {key!r} were scored against different labels "
                f"({differs}); {SAME_EXAMPLES}"
            )
    return reference


def _differing_rows(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"shapes {a.shape} and {b.shape}"
    rows = (a != b).reshape(len(a), -1).any(axis=1)
    return f"{int(rows.sum())} of {len(a)} examples, first at index {int(np.argmax(rows))}"


def scored_vectors(
    correct: Mapping[str, Any], loader: Iterable | None, device: Any
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``(correctness vector per key, the labels if known)`` from models and a loader,
    correctness vectors or :class:`Predictions` (module docstring), checked."""
    is_model = [isinstance(value, nn.Module) for value in correct.values()]
    if any(is_model):
        if not all(is_model):
            raise UserInputError(
                "mistakes: give either models (with a loader) or correctness vectors / "
                "Predictions, not both"
            )
        if loader is None:
            raise UserInputError("mistakes(models, loader=...): a loader is needed to score models")
        check_ordered_loader(loader, "mistakes")
        vectors, targets = correctness_many(dict(correct), loader, device)
        check_same_length(vectors)
        return vectors, targets
    vectors, labels = {}, {}
    for key, value in correct.items():
        if isinstance(value, Predictions):
            vectors[key] = predictions_correct(value, key)
            labels[key] = as_array(value.labels)
        else:
            vectors[key] = as_correct(value, key)
    check_same_length(vectors)
    return vectors, check_same_labels(labels)
