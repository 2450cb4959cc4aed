"""REPAIR: the interpolated network's units renormalised to the interpolated statistics.

Jordan, Sedghi, Saukh, Entezari & Neyshabur, "REPAIR: REnormalizing Permuted
Activations for Interpolation Repair" (ICLR 2023): between two networks whose units
are aligned (:func:`~transferlens.analysis.unit_alignment.align`), the interpolated
network ``(1 - lam) a + lam b`` loses variance unit by unit ("variance collapse"),
which accounts for much of the barrier. REPAIR rescales each unit so that, over the
loader, its mean and standard deviation are the interpolated ones::

    target_mean[c] = (1 - lam) mean_a[c] + lam mean_b[c]
    target_std[c]  = (1 - lam) std_a[c]  + lam std_b[c]
    y'[c] = (y[c] - mean_int[c]) * target_std[c] / std_int[c] + target_mean[c]

**Where** (networks without BatchNorm: Fixup ResNets, ViTs, ConvNeXts): at the output
of every Conv/Linear module whose output channels are hidden units, i.e. lie in a
permutation group (:mod:`~transferlens.analysis.permutation_groups`): every convolution
of a ResNet (stem, block convs, shortcuts), a ViT's patch embedding, ``qkv``, ``proj``,
``fc1`` and ``fc2``; never the classifier (its outputs are the classes). Statistics
are over every sample, position and token; std is the population std.

**How**: the correction of a layer is one per-channel affine map folded into the
layer's own weight and bias (a layer without a bias gets one: its state dict gains
``<layer>.bias``); a Conv/Linear subclass with its own ``forward`` (Fixup's stem adds a
scalar after the convolution) instead gets a fixed :class:`ChannelAffine` child
``<layer>.repair_affine`` applied to its output by a forward hook.

**In which order**: correcting a layer changes the inputs of every later layer, so a
layer's statistics must be measured with the earlier corrections in place. Layer by
layer that costs one pass over the loader per layer; instead each pass measures every
layer at once, in three steps:

1. pass 1 (shared with the targets' pass over model_a and model_b) measures the
   network as given; if every hidden unit is already within ``tol`` of its target
   (``lam`` 0 or 1, B an exact permutation of A aligned back) the copy is returned
   unchanged;
2. pass 2 maps each batch's outputs to the targets with the batch's own statistics as
   it goes (as BatchNorm does in training; Jordan et al.'s own implementation), so
   every layer sees nearly its final inputs at once; the first fixed corrections are
   taken from what it measured;
3. each later pass measures the corrected network and refines every layer, until
   every hidden unit's mean and std are within ``tol`` target stds of their targets.

A layer whose upstream corrections no longer change is exact after the next pass, so
at most (longest chain of repaired layers) + 3 passes are needed; the tests' networks
take 3 to 10. (Without step 2 the errors of deep layers first grow a hundredfold and
the passes take the whole chain.) Statistics are streamed as float64 running sums: no
more than one batch's features are held. The loader must give the same batches on
every pass (no random augmentation).

**BatchNorm**: in a network with BatchNorm after its convolutions, each unit's
statistics are set by its BatchNorm; re-estimating the running statistics of the interpolated network
(:func:`~transferlens.analysis.interpolation.recompute_batchnorm`, what the
interpolation analysis already does) *is* REPAIR there. ``repair`` on a network with
BatchNorm does exactly that, on ``loader``, and corrects nothing else.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from transferlens.analysis.evalcache import analysis_device
from transferlens.analysis.features import split_batch
from transferlens.analysis.interpolation import batchnorm_layers, recompute_batchnorm
from transferlens.analysis.permutation_groups import permutation_groups
from transferlens.analysis.repair_statistics import (
    RepairLayer,
    Stats,
    channel_map,
    deviation,
    layer_statistics,
)
from transferlens.analysis.statedict import check_same_layout
from transferlens.errors import UserInputError

# Layers whose output is exactly ``weight * input + bias`` (the correction can be folded).
PLAIN_FORWARDS = (nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward)
AFFINE_CHILD = "repair_affine"


class ChannelAffine(nn.Module):
    """``output * scale + shift`` per channel along ``dim`` (fixed buffers): REPAIR's
    correction for a layer whose own weight and bias cannot carry it."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("shift", torch.zeros(channels))

    def forward(self, output: torch.Tensor) -> torch.Tensor:
        shape = [1] * output.ndim
        shape[self.dim] = -1
        return output * self.scale.view(shape) + self.shift.view(shape)


def _apply_affine(module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    # A module-level function, so a deep copy of the layer calls its own child.
    return getattr(module, AFFINE_CHILD)(output)


@dataclass(frozen=True)
class RepairResult:
    """The result of :func:`repair_details`.

    ``model``: the repaired copy of the interpolated network; ``mode``: ``affine``
    (units rescaled) or ``batchnorm`` (BatchNorm statistics re-estimated); ``layers``:
    the repaired layers; ``passes``: passes over the loader on the interpolated
    network; ``error``: the largest deviation of a channel's mean or std from its
    target, in units of the target std, after the last correction (measured);
    ``converged``: ``error <= tol``.
    """

    model: nn.Module
    mode: str
    layers: tuple[str, ...]
    passes: int
    error: float
    converged: bool
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RepairEndpoints:
    """What REPAIR measures on the two end models, the same at every ``lam`` of a pair:
    the repaired layers and each layer's per-channel ``(mean, std)`` in model_a and
    model_b (:func:`repair_endpoints`)."""

    layers: tuple[RepairLayer, ...]
    stats_a: Stats
    stats_b: Stats


def repair_endpoints(
    model_a: nn.Module,
    model_b: nn.Module,
    loader: Iterable,
    *,
    device: str | torch.device | None = None,
) -> RepairEndpoints:
    """The end models' statistics over ``loader``, measured once for every ``lam`` of a
    pair (pass them to :func:`repair_details` as ``endpoints``)."""
    compute = analysis_device(device, model_a)
    inputs = [split_batch(item)[0].to(compute) for item in loader]
    if not inputs:
        raise UserInputError("repair: the loader yielded no batches")
    model_a, model_b = _on(model_a, compute), _on(model_b, compute)
    layers = repair_layers(model_a, inputs[0][:2])
    stats_a, stats_b = layer_statistics([model_a, model_b], layers, inputs)
    return RepairEndpoints(layers, stats_a, stats_b)


def repair_layers(model: nn.Module, example: torch.Tensor | None = None) -> tuple[RepairLayer, ...]:
    """The Conv/Linear modules of ``model`` whose output channels are hidden units (lie
    in a permutation group of ``model``'s graph, traced with ``example``), in module order."""
    covered: dict[str, list[tuple[int, int]]] = {}
    for group in permutation_groups(model, example):
        for axis in group.axes:
            if axis.axis == 0 and axis.key.endswith(".weight"):
                covered.setdefault(axis.key[: -len(".weight")], []).append(
                    (axis.offset, group.size)
                )
    layers = []
    for name, module in model.named_modules():
        if name not in covered or not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
            continue
        out = module.weight.shape[0]
        channels = torch.zeros(out, dtype=torch.bool)
        for offset, size in covered[name]:
            channels[offset : offset + size] = True
        layers.append(RepairLayer(name, channels, -1 if isinstance(module, nn.Linear) else 1))
    return tuple(layers)


class Corrector:
    """Each layer's correction ``y -> scale * y + shift`` relative to its output as
    interpolated, kept in float64 and written into the working network."""

    def __init__(self, model: nn.Module, layers: Sequence[RepairLayer]) -> None:
        self.model, self.layers = model, layers
        self.scale: dict[str, torch.Tensor] = {}
        self.shift: dict[str, torch.Tensor] = {}
        self.original: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for layer in layers:
            module = model.get_submodule(layer.name)
            out = module.weight.shape[0]
            device = module.weight.device
            self.scale[layer.name] = torch.ones(out, dtype=torch.float64, device=device)
            self.shift[layer.name] = torch.zeros(out, dtype=torch.float64, device=device)
            bias = module.bias.detach().clone() if module.bias is not None else None
            self.original[layer.name] = (module.weight.detach().clone(), bias)

    def update(self, layer: RepairLayer, stats: tuple, target: tuple) -> None:
        """Compose the map taking the measured ``stats`` to ``target`` onto the layer's
        correction and write it into the network."""
        ratio, move = channel_map(layer, *stats, *target)
        self.scale[layer.name] = ratio * self.scale[layer.name]
        self.shift[layer.name] = ratio * self.shift[layer.name] + move
        self._write(layer)

    def _write(self, layer: RepairLayer) -> None:
        module = self.model.get_submodule(layer.name)
        scale, shift = self.scale[layer.name], self.shift[layer.name]
        weight, bias = self.original[layer.name]
        if _foldable(module):
            view = (-1,) + (1,) * (weight.ndim - 1)
            module.weight.data.copy_((weight.double() * scale.view(view)).to(weight.dtype))
            new_bias = shift if bias is None else bias.double() * scale + shift
            if module.bias is None:
                module.bias = nn.Parameter(weight.new_zeros(weight.shape[0]))
            module.bias.data.copy_(new_bias.to(module.bias.dtype))
            return
        if not hasattr(module, AFFINE_CHILD):
            affine = ChannelAffine(len(scale), layer.dim).to(weight.device, weight.dtype)
            module.add_module(AFFINE_CHILD, affine)
            module.register_forward_hook(_apply_affine)
        affine = getattr(module, AFFINE_CHILD)
        affine.scale.copy_(scale.to(affine.scale.dtype))
        affine.shift.copy_(shift.to(affine.shift.dtype))


def _foldable(module: nn.Module) -> bool:
    return type(module).forward in PLAIN_FORWARDS and not parametrize.is_parametrized(module)


def _check(lam: float, tol: float, max_passes: int | None) -> float:
    lam = float(lam)
    if not math.isfinite(lam) or not 0.0 <= lam <= 1.0:
        raise UserInputError(f"repair: lam must be between 0 and 1 (got {lam})")
    if not (isinstance(tol, int | float) and not isinstance(tol, bool) and tol > 0):
        raise UserInputError(f"repair: tol must be a positive number (got {tol!r})")
    if max_passes is not None and (
        isinstance(max_passes, bool) or not isinstance(max_passes, int) or max_passes < 3
    ):
        raise UserInputError(f"repair: max_passes must be an integer >= 3 (got {max_passes!r})")
    return lam


def _named_layers(model: nn.Module, names: Sequence[str]) -> tuple[RepairLayer, ...]:
    modules = dict(model.named_modules())
    layers = []
    for name in names:
        module = modules.get(name)
        if not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
            raise UserInputError(f"repair: layers: {name!r} is not a Conv or Linear module")
        channels = torch.ones(module.weight.shape[0], dtype=torch.bool)
        layers.append(RepairLayer(name, channels, -1 if isinstance(module, nn.Linear) else 1))
    return tuple(layers)


def repair_details(
    model_a: nn.Module,
    model_b: nn.Module,
    interpolated: nn.Module,
    loader: Iterable,
    lam: float,
    *,
    device: str | torch.device | None = None,
    layers: Sequence[str] | None = None,
    tol: float = 1e-3,
    max_passes: int | None = None,
    endpoints: RepairEndpoints | None = None,
) -> RepairResult:
    """REPAIR ``interpolated`` (= ``(1 - lam) model_a + lam model_b``, ``model_b``
    aligned to ``model_a``) over ``loader`` (items ``(inputs, targets)`` or input
    tensors; read once for the targets and once per pass). See the module docstring.

    ``layers``: the Conv/Linear modules to repair (default: every one whose outputs
    are hidden units, derived from ``model_a``'s graph); ``tol``: the largest deviation
    of a unit's mean or std from its target, in units of the target std, at which
    the passes stop; ``max_passes``: at most this many passes (default: the number of
    layers + 3, enough for exactness; at least 3). Neither input is modified; the
    repaired copy lives on ``interpolated``'s device, in its training mode. On a
    network with BatchNorm (``mode="batchnorm"``) ``layers``, ``tol`` and
    ``max_passes`` do not apply and ``error`` is NaN. ``endpoints``
    (:func:`repair_endpoints` over the same loader, default layers) skips measuring the
    end models again: the same numbers, one forward pass per batch instead of three.
    """
    lam = _check(lam, tol, max_passes)
    for name, model in (("model_a", model_a), ("model_b", model_b), ("interpolated", interpolated)):
        if not isinstance(model, nn.Module):
            raise UserInputError(
                f"repair: {name} must be an nn.Module (got {type(model).__name__})"
            )
    check_same_layout(model_a.state_dict(), model_b.state_dict())
    check_same_layout(model_a.state_dict(), interpolated.state_dict())
    if iter(loader) is loader:  # an iterator: a second pass would find it empty
        raise UserInputError(
            "repair: the loader is read once per pass: pass a DataLoader or a list, "
            "not an iterator or generator"
        )
    compute = analysis_device(device, model_a)
    home = next((p.device for p in interpolated.parameters()), compute)
    settings = {"lam": lam, "tol": tol, "max_passes": max_passes,
                "layers": None if layers is None else list(layers)}  # fmt: skip
    work = copy.deepcopy(interpolated).to(compute)

    def batches() -> Iterator[torch.Tensor]:
        for item in loader:
            yield split_batch(item)[0].to(compute)

    example = next(iter(batches()), None)
    if example is None:
        raise UserInputError("repair: the loader yielded no batches")
    if batchnorm_layers(work):
        if layers is not None:
            raise UserInputError(
                "repair: layers cannot be chosen for a network with BatchNorm "
                "(its REPAIR is re-estimating the BatchNorm statistics)"
            )
        with torch.no_grad():
            recompute_batchnorm(work, ((inputs, None) for inputs in batches()))
        return RepairResult(work.to(home), "batchnorm", (), 1, math.nan, True, settings)

    cached = endpoints is not None and layers is None
    if cached:
        chosen = endpoints.layers
    else:
        model_a, model_b = _on(model_a, compute), _on(model_b, compute)
        chosen = (
            repair_layers(model_a, example[:2]) if layers is None else _named_layers(work, layers)
        )
    if not chosen:
        raise UserInputError(
            "repair: the model has no Conv/Linear layer with hidden units to repair"
        )
    # Pass 1 reads the loader once for the targets and the uncorrected network.
    if cached:
        (stats,) = layer_statistics([work], chosen, batches())
        stats_a, stats_b = endpoints.stats_a, endpoints.stats_b
    else:
        stats_a, stats_b, stats = layer_statistics([model_a, model_b, work], chosen, batches())
    targets = {
        layer.name: tuple(
            torch.lerp(a, b, lam) if 0.0 < lam < 1.0 else (a if lam == 0.0 else b)
            for a, b in zip(stats_a[layer.name], stats_b[layer.name])
        )
        for layer in chosen
    }
    error, passes = deviation(stats, targets, chosen), 1
    limit = len(chosen) + 3 if max_passes is None else max_passes
    if error > tol:
        corrector = Corrector(work, chosen)
        # Pass 2 normalises each batch on the fly (as BatchNorm trains, Jordan et al.'s
        # reset): every layer sees nearly its final inputs at once, and the fixed
        # corrections taken from it are close; the passes after it only refine.
        (stats,) = layer_statistics([work], chosen, batches(), normalise=targets)
        passes += 1
        while passes < limit:
            for layer in chosen:
                corrector.update(layer, stats[layer.name], targets[layer.name])
            (stats,) = layer_statistics([work], chosen, batches())
            error, passes = deviation(stats, targets, chosen), passes + 1
            if error <= tol:
                break
    names = tuple(layer.name for layer in chosen)
    return RepairResult(work.to(home), "affine", names, passes, error, error <= tol, settings)


def _on(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself if it already lives on ``device``, else a copy moved there."""
    parameter = next(model.parameters(), None)
    if parameter is None or parameter.device == device:
        return model
    return copy.deepcopy(model).to(device)


def repair(
    model_a: nn.Module,
    model_b: nn.Module,
    interpolated: nn.Module,
    loader: Iterable,
    lam: float,
    *,
    device: str | torch.device | None = None,
    layers: Sequence[str] | None = None,
    tol: float = 1e-3,
    max_passes: int | None = None,
) -> nn.Module:
    """The REPAIRed copy of ``interpolated`` (:func:`repair_details`' ``model``): at
    each repaired layer every hidden unit's mean and std over ``loader`` are
    ``(1 - lam)`` times model_a's plus ``lam`` times model_b's (within ``tol``)."""
    return repair_details(
        model_a, model_b, interpolated, loader, lam,
        device=device, layers=layers, tol=tol, max_passes=max_passes,
    ).model  # fmt: skip
