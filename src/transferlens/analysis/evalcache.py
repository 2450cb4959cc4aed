"""Evaluation batches prepared once, and evaluated again and again.

The weight-space analyses evaluate many networks on the same data: 11-50 points of
an interpolation path, up to 1,210 perturbed networks per module for criticality.
Reading, decoding, normalising and shuffling the images once per evaluation (what a
``DataLoader`` over JPEG files does) dominates their cost, so the batches are
materialised once -- on the device when they fit -- and every evaluation runs over
that list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from transferlens.analysis.checks import check_task
from transferlens.devices import resolve_device
from transferlens.errors import UserInputError
from transferlens.evaluation import EvalResult, evaluate, model_device
from transferlens.metrics import Task

Batch = tuple[torch.Tensor, torch.Tensor]
# Without an explicit budget, at most this fraction of the free device memory holds data.
DEVICE_MEMORY_FRACTION = 0.5


def analysis_device(
    device: str | torch.device | None, model: nn.Module | None = None
) -> torch.device:
    """``device`` if given (checked by :func:`transferlens.devices.resolve_device`: an
    absent GPU is one line, exit 2), else the model's, else the CPU."""
    if device is not None:
        return resolve_device(device)
    return model_device(model) if model is not None else torch.device("cpu")


def _split(item: object) -> Batch:
    if isinstance(item, list | tuple) and len(item) >= 2:
        inputs, targets = item[0], item[1]
        if isinstance(inputs, torch.Tensor) and isinstance(targets, torch.Tensor):
            return inputs, targets
    raise UserInputError(
        f"the data loader must yield (inputs, targets) pairs of tensors (got {type(item).__name__})"
    )


class PreparedBatches:
    """The ``(inputs, targets)`` batches of a loader, read once and kept for re-use.

    Batches are kept on ``device`` while they fit in ``max_device_bytes`` (default:
    half the free memory of a CUDA device, unlimited on the CPU); the rest stay in
    pinned host memory and are copied over on each pass. Iterating yields batches on
    ``device``, in the loader's order (so a shuffling loader is shuffled once, here).
    """

    def __init__(
        self,
        loader: Iterable,
        device: str | torch.device | None = None,
        *,
        max_batches: int | None = None,
        max_device_bytes: int | None = None,
    ) -> None:
        self.device = analysis_device(device)
        if max_batches is not None and max_batches < 1:
            raise UserInputError(f"max_batches must be at least 1 (got {max_batches})")
        budget = max_device_bytes
        if budget is None and self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            budget = int(DEVICE_MEMORY_FRACTION * free)
        used = 0
        self._batches: list[tuple[Batch, bool]] = []  # (batch, already on the device)
        for item in loader:
            if max_batches is not None and len(self._batches) >= max_batches:
                break
            inputs, targets = _split(item)
            size = inputs.numel() * inputs.element_size() + targets.numel() * targets.element_size()
            if budget is None or used + size <= budget:
                used += size
                batch = (inputs.to(self.device), targets.to(self.device))
                self._batches.append((batch, True))
            else:
                pinned = self.device.type == "cuda"
                batch = (
                    inputs.pin_memory() if pinned else inputs,
                    targets.pin_memory() if pinned else targets,
                )
                self._batches.append((batch, False))
        if not self._batches:
            raise UserInputError("the data loader yielded no batches")
        self.n_examples = sum(len(batch[1]) for batch, _ in self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        for (inputs, targets), on_device in self._batches:
            if on_device:
                yield inputs, targets
            else:
                yield (
                    inputs.to(self.device, non_blocking=True),
                    targets.to(self.device, non_blocking=True),
                )


def prepare_batches(
    data: Iterable | PreparedBatches,
    device: str | torch.device | None = None,
    *,
    max_batches: int | None = None,
) -> PreparedBatches:
    """``data`` itself if already prepared (for the same device), else a new :class:`PreparedBatches`."""
    if isinstance(data, PreparedBatches) and (
        device is None or data.device == torch.device(device)
    ):
        return data
    return PreparedBatches(data, device, max_batches=max_batches)


def evaluate_batches(model: nn.Module, batches: Iterable[Batch], task: Task) -> EvalResult:
    """Mean loss and metric of ``model`` over ``batches`` (see :func:`transferlens.evaluation.evaluate`).

    loss = (1/n) sum_i loss_i; metric = top-1 accuracy or mean ROC-AUC over labels.
    """
    check_task(task)
    return evaluate(model, batches, task)  # type: ignore[arg-type]  (any iterable of batches)
