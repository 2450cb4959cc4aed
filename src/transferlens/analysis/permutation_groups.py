"""The permutation groups of a network: which hidden units may be permuted, and together.

A **group** is a set of hidden units (``size`` of them) and every parameter or buffer
axis that indexes them (:class:`Axis`). Permuting the units of a network by ``p``
(unit ``i`` of the result is unit ``p[i]`` of the original) permutes every axis of the
group the same way, and leaves the network's function unchanged.

The groups are derived from the model's torch.fx graph
(:mod:`transferlens.analysis.permutation_trace`), never written by hand:

* the output channels of a Conv/Linear are a group's units, with the next layer's
  input axis; the norms (BatchNorm weight, bias, running statistics; LayerNorm) and
  biases that act on them follow them;
* units joined by a residual add are one group (a ResNet stage's whole stream, a
  ViT's whole token stream, a ConvNeXt stage), as is everything an elementwise op
  lines up (ConvNeXt's layer-scale ``gamma``, a ViT's ``cls_token`` and the last axis
  of ``pos_embed``);
* a depthwise convolution passes its input's permutation through;
* scalars (shape ``[1]``: Fixup's biases and scale) never move; neither do the
  network's input channels nor the classifier's outputs;
* timm's fused attention (``qkv``, ``proj``, ``num_heads``) gives two head-structured
  groups sharing one permutation of whole heads (``head_set``): ``<attn>.qk`` (the
  query and key units, permuted jointly inside each head) and ``<attn>.v`` (the
  value units inside each head, with ``proj``'s input axis).

Each group also names its **probes**, where its units are seen as activations (for
activation matching and REPAIR): the last node of the graph whose output carries the
group (a block's post-activation, a stage's last output), or for attention the
``qkv`` output (q and k slices) and ``proj``'s input (the values after attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from transferlens.analysis.permutation_trace import FIXED, Walk, module_of, walk
from transferlens.errors import UserInputError


@dataclass(frozen=True)
class Axis:
    """Axis ``axis`` of state entry ``key``; the group's units are its entries
    ``offset .. offset + size - 1`` (``offset`` > 0 only inside a fused ``qkv``)."""

    key: str
    axis: int
    offset: int = 0


@dataclass(frozen=True)
class Probe:
    """Where a group's units show as activations: ``kind`` ``node`` (the output of the
    fx node named ``target``), ``output`` (a module's output, by forward hook) or
    ``input`` (a module's first input); the units are entries ``offset ..`` of axis ``dim``."""

    kind: Literal["node", "output", "input"]
    target: str
    dim: int
    offset: int = 0


@dataclass(frozen=True)
class PermutationGroup:
    """Hidden units permuted together (see the module docstring).

    ``heads`` > 1: the units come in ``heads`` blocks of ``size // heads`` (attention
    heads); a permutation must map whole heads to heads, and every group with the same
    ``head_set`` moves its heads the same way.
    """

    name: str
    size: int
    axes: tuple[Axis, ...]
    probes: tuple[Probe, ...]
    heads: int = 1
    head_set: str | None = None


def example_input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    """A random input the model accepts: a timm ViT's ``patch_embed.img_size``, else
    64 x 64 px; channels from the first convolution (3 without one)."""
    size: tuple[int, int] = (64, 64)
    patch_embed = getattr(model, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is not None:
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)[:2]
    first = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    channels = first.in_channels if first is not None else 3
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, *size, generator=generator).to(device)


def permutation_groups(
    model: nn.Module, example: torch.Tensor | None = None
) -> tuple[PermutationGroup, ...]:
    """The permutation groups of ``model``, in graph order (see the module docstring).

    ``example``: an input batch the model accepts (default :func:`example_input`); it is
    run once, in eval mode, to learn the shapes. UserInputError, one line naming the
    node and module, for an op the derivation does not know.
    """
    traced = walk(model, example_input(model) if example is None else example)
    return _plain_groups(traced) + _attention_groups(traced, model)


def _plain_groups(traced: Walk) -> tuple[PermutationGroup, ...]:
    graph = traced.graph
    axes_of: dict[int, list[Axis]] = {}
    for (key, axis), label in graph.axes.items():
        root = graph.find(label)
        if root != FIXED:
            axes_of.setdefault(root, []).append(Axis(key, axis))
    first: dict[int, str] = {}
    last: dict[int, Probe] = {}
    for node, labels in traced.activations():
        for dim, label in enumerate(labels):
            root = graph.find(label)
            if root in axes_of:
                name = module_of(node) or node.name
                first.setdefault(root, name)
                last[root] = Probe("node", node.name, dim)
    groups = []
    for root, axes in axes_of.items():
        sizes = {traced.state[a.key].shape[a.axis] for a in axes}
        if len(sizes) != 1 or root not in first:
            keys = ", ".join(sorted({a.key for a in axes}))
            raise UserInputError(
                f"align: cannot derive the permutation groups of {traced.model_name}: "
                f"the axes of {keys} are joined but {'differ in size' if len(sizes) != 1 else 'never seen as activations'}"
            )
        groups.append(
            PermutationGroup(
                first[root], sizes.pop(), tuple(sorted(axes, key=_order(traced))), (last[root],)
            )
        )
    order = {name: i for i, name in enumerate(traced.state)}
    return tuple(sorted(groups, key=lambda g: min(order[a.key] for a in g.axes)))


def _order(traced: Walk):
    order = {name: i for i, name in enumerate(traced.state)}
    return lambda axis: (order[axis.key], axis.axis)


def _attention_groups(traced: Walk, model: nn.Module) -> tuple[PermutationGroup, ...]:
    groups = []
    for name in traced.attention:
        module = model.get_submodule(name)
        width, heads = module.proj.in_features, module.num_heads
        if width % heads:
            raise UserInputError(
                f"align: attention {name!r}: width {width} is not a multiple of {heads} heads"
            )
        qkv_w, qkv_b = f"{name}.qkv.weight", f"{name}.qkv.bias"
        has_bias = qkv_b in traced.state
        qk = [Axis(qkv_w, 0, 0), Axis(qkv_w, 0, width)]
        v = [Axis(qkv_w, 0, 2 * width)]
        if has_bias:
            qk += [Axis(qkv_b, 0, 0), Axis(qkv_b, 0, width)]
            v += [Axis(qkv_b, 0, 2 * width)]
        v.append(Axis(f"{name}.proj.weight", 1, 0))
        qkv_out = (Probe("output", f"{name}.qkv", -1, 0), Probe("output", f"{name}.qkv", -1, width))
        groups += [
            PermutationGroup(f"{name}.qk", width, tuple(qk), qkv_out, heads, name),
            PermutationGroup(
                f"{name}.v", width, tuple(v), (Probe("input", f"{name}.proj", -1),), heads, name
            ),
        ]
    return tuple(groups)


def permute_axis(tensor: torch.Tensor, axis: Axis, perm: torch.Tensor) -> torch.Tensor:
    """``tensor`` with entries ``offset + i`` of ``axis.axis`` replaced by ``offset + perm[i]``."""
    length = tensor.shape[axis.axis]
    if axis.offset == 0 and len(perm) == length:
        return tensor.index_select(axis.axis, perm)
    index = torch.arange(length, device=perm.device)
    index[axis.offset : axis.offset + len(perm)] = perm + axis.offset
    return tensor.index_select(axis.axis, index)


def permute_state(
    state: dict[str, torch.Tensor],
    groups: tuple[PermutationGroup, ...],
    permutations: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """A new state dict: every axis of every group permuted by its group's permutation
    (entries no group touches are the same tensors)."""
    out = dict(state)
    for group in groups:
        perm = permutations[group.name]
        for axis in group.axes:
            out[axis.key] = permute_axis(out[axis.key], axis, perm.to(out[axis.key].device))
    return out
