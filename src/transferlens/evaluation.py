"""Evaluate a model on a data set: mean loss and the task's metric, single or multi-process.

* ``evaluate(model, loader, task)`` runs the model in evaluation mode under
  ``torch.inference_mode`` and returns :class:`EvalResult` ``(loss, metric, n)``:
  ``loss`` = (1/n) sum_i loss_i (mean over examples), ``metric`` = top-1 accuracy
  computed as (sum of correct counts) / n for ``multiclass``, or the mean over labels
  of the ROC-AUC of all gathered scores for ``multilabel``.
* ``predict(model, loader)`` returns the logits ``[N, K]`` (float32, CPU) and targets.
* ``evaluate(..., keep_examples=True)`` also returns what the metric needs of each
  example (:class:`~transferlens.metrics.ExampleOutcomes`, in data-set order), for a
  bootstrap over the examples without another forward pass.

Under ``torch.distributed`` each process must see a disjoint shard of the data (use
:class:`ShardSampler`, which splits without padding). Sums (loss, correct count, n)
are then all-reduced and multilabel scores all-gathered, so a run of P processes
reports what one process reports on the whole data (up to float summation order).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from transferlens.devices import resolve_device
from transferlens.metrics import (
    ExampleOutcomes,
    Task,
    correct_predictions,
    mean_roc_auc,
    task_loss,
)


@dataclass(frozen=True)
class EvalResult:
    """Mean loss over the ``n`` examples and the task metric (a fraction in [0, 1]);
    ``examples``: each example's outcome when asked for (``keep_examples``)."""

    loss: float
    metric: float
    n: int
    examples: ExampleOutcomes | None = None


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, rank + 2 world, ...`` of a data set: disjoint, no padding.

    Unlike ``DistributedSampler`` it never repeats examples to even out the shards,
    so evaluation sums over all processes equal the sums over the whole data set.
    """

    def __init__(self, dataset: Sized, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.length = len(dataset)
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without any."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` (CUDA or CPU), else a no-op context."""
    if enabled and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _inputs_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolution weights are stored channels-last (then so are inputs)."""
    for parameter in model.parameters():
        if parameter.dim() != 4:
            continue
        dense = parameter.is_contiguous()
        last = parameter.is_contiguous(memory_format=torch.channels_last)
        if dense != last:  # 1x1 kernels are both: they tell nothing
            return last
    return False


def logit_batches(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool):
    """Yield ``(logits, targets)`` on ``device`` for each batch, the model in eval mode
    (float32 logits; the same inputs' layout and autocast as :func:`evaluate`, so a caller
    that keeps per-example terms sees the very logits ``evaluate`` scores)."""
    memory_format = torch.channels_last if _inputs_channels_last(model) else torch.contiguous_format
    non_blocking = device.type == "cuda"
    for batch in loader:
        images, targets = batch[0], batch[1]
        if images.dim() == 4:
            images = images.to(device, non_blocking=non_blocking, memory_format=memory_format)
        else:
            images = images.to(device, non_blocking=non_blocking)
        targets = targets.to(device, non_blocking=non_blocking)
        with autocast(device, amp):
            logits = model(images)
        yield logits.float(), targets


@contextlib.contextmanager
def evaluation_mode(models: Iterable[nn.Module]) -> Iterator[None]:
    """Every module of ``models`` in eval mode inside the block; each module's flag restored after.

    Flags are restored module by module, so a model that was training with some
    layers frozen in eval mode (e.g. BatchNorm) comes back exactly as it was.
    """
    models = list(models)
    flags = [[module.training for module in model.modules()] for model in models]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for model, model_flags in zip(models, flags):
            for module, flag in zip(model.modules(), model_flags):
                module.training = flag


def _all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (rows may differ per process) from every process, rank order."""
    world_size = dist.get_world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.int64)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    largest = max(sizes)
    padded = tensor.new_zeros((largest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)])


def _shard_sizes(size: int, comm: torch.device) -> list[int]:
    """Every process's number of rows, in rank order."""
    count = torch.tensor([size], device=comm, dtype=torch.int64)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    return [int(c.item()) for c in counts]


def _communication_device(device: torch.device) -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def _data_set_order(loader: DataLoader, shard_sizes: list[int]) -> np.ndarray | None:
    """Where each row of a rank-order gather goes in data-set order: rank r's j-th example
    is example ``r + j * world`` under :class:`ShardSampler`; None for another sampler
    (the rows then stay in rank order, a fixed order all the same)."""
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, ShardSampler) or len(shard_sizes) != sampler.world_size:
        return None
    shards = [
        np.arange(rank, sampler.length, sampler.world_size) for rank in range(len(shard_sizes))
    ]
    if [len(shard) for shard in shards] != shard_sizes:
        return None
    return np.concatenate(shards)


def _example_outcomes(
    task: Task,
    correct: torch.Tensor | None,
    scores: torch.Tensor | None,
    labels: torch.Tensor | None,
    order: np.ndarray | None,
) -> ExampleOutcomes:
    """The gathered per-example terms, put back in data-set order when ``order`` is known."""

    def placed(rows: torch.Tensor) -> np.ndarray:
        values = rows.cpu().numpy()
        if order is None:
            return values
        out = np.empty_like(values)
        out[order] = values
        return out

    if task == "multiclass":
        return ExampleOutcomes(task, correct=placed(correct).astype(bool))
    return ExampleOutcomes(task, scores=placed(scores), labels=placed(labels) > 0.5)


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    task: Task,
    device: torch.device | str | None = None,
    amp: bool = False,
    distributed: bool | None = None,
    keep_examples: bool = False,
) -> EvalResult:
    """Mean loss and metric of ``model`` over ``loader`` (evaluation mode, no gradients).

    ``device`` defaults to the model's; ``amp`` turns on bf16 autocast.
    ``distributed`` (default: whether a process group of >1 processes is running)
    reduces over processes; each process must then hold a disjoint shard.
    ``keep_examples``: also return each example's outcome (``EvalResult.examples``),
    gathered from every process (a collective: every process must ask) and, under
    :class:`ShardSampler`, in data-set order. The loss and metric do not change.
    """
    device = resolve_device(device) if device is not None else model_device(model)
    reduce = is_distributed() if distributed is None else distributed
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    scores: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    corrects: list[torch.Tensor] = []  # only with keep_examples (multiclass)
    with evaluation_mode([model]), torch.inference_mode():
        for logits, targets in logit_batches(model, loader, device, amp):
            # Sums stay on the device: one synchronisation at the end, not one per batch.
            # Per-example losses summed in float64: the total does not depend on how
            # the examples were batched or sharded (float32 batch sums would).
            loss_sum += task_loss(logits, targets, task, reduction="none").double().sum()
            count += targets.shape[0]
            if task == "multiclass":
                hits = correct_predictions(logits, targets)
                correct += hits.sum()
                if keep_examples:
                    corrects.append(hits.to(torch.int64))
            else:
                scores.append(logits.cpu())
                labels.append(targets.float().cpu())
    if task == "multilabel":
        all_scores = torch.cat(scores) if scores else torch.zeros(0, 0)
        all_labels = torch.cat(labels) if labels else torch.zeros(0, 0)
    all_correct = None
    if keep_examples and task == "multiclass":
        all_correct = torch.cat(corrects) if corrects else torch.zeros(0, dtype=torch.int64)
    shard_sizes = [int(count.item())] if keep_examples else []  # this process's rows
    if reduce:
        comm = _communication_device(device)
        sums = torch.stack([loss_sum, correct.double(), count.double()]).to(comm)
        dist.all_reduce(sums)
        loss_sum, correct, count = sums[0], sums[1].round().long(), sums[2].round().long()
        if keep_examples:
            shard_sizes = _shard_sizes(shard_sizes[0], comm)
        if task == "multilabel":
            all_scores = _all_gather_rows(all_scores.to(comm)).cpu()
            all_labels = _all_gather_rows(all_labels.to(comm)).cpu()
        elif keep_examples:
            all_correct = _all_gather_rows(all_correct.to(comm)).cpu()
    n = int(count.item())
    if n == 0:
        return EvalResult(loss=float("nan"), metric=float("nan"), n=0)
    loss = float(loss_sum.item()) / n
    if task == "multiclass":
        metric = int(correct.item()) / n
    else:
        metric = mean_roc_auc(all_scores, all_labels)
    examples = None
    if keep_examples:
        order = _data_set_order(loader, shard_sizes)
        if task == "multiclass":
            examples = _example_outcomes(task, all_correct, None, None, order)
        else:
            examples = _example_outcomes(task, None, all_scores, all_labels, order)
    return EvalResult(loss=loss, metric=metric, n=n, examples=examples)


def predict(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str | None = None,
    amp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[N, K]`` (float32, CPU) and targets of this process's data, in loader order."""
    device = resolve_device(device) if device is not None else model_device(model)
    all_logits: list[torch.Tensor] = []
    all_targets: list[torch.Tensor] = []
    with evaluation_mode([model]), torch.inference_mode():
        for logits, targets in logit_batches(model, loader, device, amp):
            all_logits.append(logits.cpu())
            all_targets.append(targets.cpu())
    if not all_logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.int64)
    return torch.cat(all_logits), torch.cat(all_targets)
