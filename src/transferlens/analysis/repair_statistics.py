"""Per-channel statistics of layer outputs, streamed, for REPAIR (:mod:`.unit_repair`).

A layer's output channels are seen over every sample, position and token; their mean
and population standard deviation are float64 running sums (never more than one
batch's features held). :func:`channel_map` is the per-channel affine map taking
measured statistics to target ones, and :func:`deviation` how far a network still is
from its targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from transferlens.errors import UserInputError
from transferlens.evaluation import evaluation_mode

Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class RepairLayer:
    """A repaired layer: ``channels`` (bool, one per output channel) marks its hidden
    units; ``dim`` is the channel axis of its output (1 for a conv, -1 for a linear)."""

    name: str
    channels: torch.Tensor
    dim: int


class Moments:
    """Per-channel running sums of one layer's output (float64, shifted by the first
    batch's means so that a large mean does not swamp the variance)."""

    def __init__(self) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, output: torch.Tensor, dim: int) -> None:
        values = output.detach().movedim(dim, -1)
        values = values.reshape(-1, values.shape[-1]).double()
        if self.shift is None:
            self.shift = values.mean(0)
            self.total = torch.zeros_like(self.shift)
            self.squares = torch.zeros_like(self.shift)
        centred = values - self.shift
        self.count += values.shape[0]
        self.total += centred.sum(0)
        self.squares += (centred * centred).sum(0)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and population standard deviation."""
        offset = self.total / self.count
        variance = (self.squares / self.count - offset * offset).clamp_min(0)
        return self.shift + offset, variance.sqrt()


@torch.no_grad()
def layer_statistics(
    models: Sequence[nn.Module],
    layers: Sequence[RepairLayer],
    batches: Iterable[torch.Tensor],
    normalise: Stats | None = None,
) -> list[Stats]:
    """Per model, ``{layer: (mean, std)}`` of each layer's output channels over
    ``batches`` (input tensors on the models' device), every model in eval mode.
    Each batch runs through every model in turn: the batches are read once.

    ``normalise`` (``{layer: (target mean, target std)}``): each layer's output is
    measured, then replaced by itself mapped to the targets with this batch's own
    statistics (as BatchNorm does in training), so that every later layer sees
    inputs with the target statistics already.
    """
    moments = [{layer.name: Moments() for layer in layers} for _ in models]
    handles = []
    for model, sums in zip(models, moments):
        for layer in layers:
            hook = StatisticsHook(
                layer, sums[layer.name], None if normalise is None else normalise[layer.name]
            )
            handles.append(model.get_submodule(layer.name).register_forward_hook(hook))
    seen = False
    try:
        with evaluation_mode(models):
            for inputs in batches:
                seen = True
                for model in models:
                    model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise UserInputError("repair: the loader yielded no batches")
    return [{name: m.mean_std() for name, m in sums.items()} for sums in moments]


class StatisticsHook:
    """A forward hook adding a layer's output to its moments (and, with a target,
    replacing it by the batch-normalised output)."""

    def __init__(self, layer: RepairLayer, moments: Moments, target: tuple | None) -> None:
        self.layer, self.moments, self.target = layer, moments, target

    def __call__(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> Any:
        self.moments.add(output, self.layer.dim)
        if self.target is None:
            return None
        batch = Moments()
        batch.add(output, self.layer.dim)
        ratio, move = channel_map(self.layer, *batch.mean_std(), *self.target)
        shape = [1] * output.ndim
        shape[self.layer.dim] = -1
        return (output.double() * ratio.view(shape) + move.view(shape)).to(output.dtype)


def channel_map(
    layer: RepairLayer,
    mean: torch.Tensor,
    std: torch.Tensor,
    target_mean: torch.Tensor,
    target_std: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ratio, move)`` with ``ratio * y + move`` taking channels of mean ``mean`` and
    std ``std`` to the targets: the identity outside the layer's hidden units; a constant
    channel cannot be rescaled and is only shifted."""
    hidden = layer.channels.to(mean.device)
    constant = is_constant(std, mean, target_std)
    ratio = torch.where(constant, 1.0, target_std / std.clamp_min(1e-300))
    ratio = torch.where(hidden, ratio, 1.0)
    return ratio, torch.where(hidden, target_mean - ratio * mean, 0.0)


def is_constant(std: torch.Tensor, mean: torch.Tensor, target_std: torch.Tensor) -> torch.Tensor:
    """Channels whose spread is below float32 resolution: no scale can be trusted."""
    return std <= 1e-6 * (mean.abs() + target_std) + 1e-12


def deviation(stats: Stats, targets: Stats, layers: Sequence[RepairLayer]) -> float:
    """The largest ``|mean - target_mean|`` or ``|std - target_std|`` of a hidden unit,
    in units of its target std (``target_std + 1e-6 (|target_mean| + 1)``, never 0);
    the std of a constant channel is not counted (it cannot be rescaled)."""
    worst = 0.0
    for layer in layers:
        (mean, std), (target_mean, target_std) = stats[layer.name], targets[layer.name]
        unit = target_std + 1e-6 * (target_mean.abs() + 1)
        spread = torch.where(is_constant(std, mean, target_std), 0.0, (std - target_std).abs())
        error = torch.maximum((mean - target_mean).abs(), spread) / unit
        error = error[layer.channels.to(error.device)]
        if error.numel():
            worst = max(worst, float(error.max()))
    return worst
