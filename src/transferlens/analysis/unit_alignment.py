"""Permutation alignment: model B's hidden units permuted to match model A's.

``align(a, b)`` returns a copy of ``b`` that computes the same function as ``b`` (its
hidden units only re-ordered) but whose units line up with ``a``'s, so that the
straight line between ``a`` and the aligned ``b`` crosses no barrier due merely to
the order of units (Ainsworth et al., ICLR 2023; Entezari et al., ICLR 2022).
What is permuted, and together, is derived from the model's graph
(:mod:`transferlens.analysis.permutation_groups`); the methods are
:mod:`~transferlens.analysis.weight_matching` (no data) and
:mod:`~transferlens.analysis.activation_matching` (a loader). See docs/alignment.md.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferlens.analysis.activation_matching import activation_matching
from transferlens.analysis.evalcache import analysis_device
from transferlens.analysis.features import split_batch
from transferlens.analysis.permutation_groups import (
    PermutationGroup,
    example_input,
    permutation_groups,
    permute_state,
)
from transferlens.analysis.statedict import check_same_layout
from transferlens.analysis.weight_matching import weight_matching
from transferlens.errors import UserInputError

METHODS = ("weights", "activations")


@dataclass(frozen=True)
class Alignment:
    """The result of :func:`alignment`.

    ``groups``: the permutation groups (from ``model_a``'s graph); ``permutations``:
    ``{group name: p}`` where unit ``i`` of ``model`` is unit ``p[i]`` of model B;
    ``model``: the aligned copy of model B; ``sweeps``: coordinate-descent sweeps run
    (weight matching; 1 for activations); ``settings``: what it was computed with.
    """

    groups: tuple[PermutationGroup, ...]
    permutations: dict[str, torch.Tensor]
    model: nn.Module
    sweeps: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> list[str]:
        """The groups whose permutation is not the identity."""
        return [
            name
            for name, p in self.permutations.items()
            if not torch.equal(p, torch.arange(len(p)))
        ]


def _batches(loader: Iterable) -> Iterator[torch.Tensor]:
    for item in loader:
        yield split_batch(item)[0]


def alignment(
    model_a: nn.Module,
    model_b: nn.Module,
    loader: Iterable | None = None,
    method: str = "weights",
    *,
    max_iter: int = 100,
    seed: int = 0,
    device: str | torch.device | None = None,
    example: torch.Tensor | None = None,
) -> Alignment:
    """Permute ``model_b``'s hidden units to match ``model_a``'s (see the module docstring).

    ``method="weights"``: weight matching, coordinate descent over the groups in a
    random order drawn from ``seed``, at most ``max_iter`` sweeps (``loader`` unused
    but for the example input). ``method="activations"``: correlations of the units
    over ``loader`` (items ``(inputs, targets)`` or input tensors), one assignment per
    group. ``example``: an input the model accepts, to learn the graph's shapes
    (default: the loader's first batch, else :func:`example_input`). Neither input
    model is modified; the aligned copy lives on ``model_b``'s device.
    """
    if method not in METHODS:
        raise UserInputError(f"align: method must be one of {', '.join(METHODS)} (got {method!r})")
    if method == "activations" and loader is None:
        raise UserInputError("align: method 'activations' needs a loader")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise UserInputError(f"align: max_iter must be a positive integer (got {max_iter!r})")
    for name, model in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(model, nn.Module):
            raise UserInputError(f"align: {name} must be an nn.Module (got {type(model).__name__})")
    check_same_layout(model_a.state_dict(), model_b.state_dict())
    compute = analysis_device(device, model_a)
    if example is None:
        example = (
            split_batch(next(iter(loader)))[0] if loader is not None else example_input(model_a)
        )
    work_a = copy.deepcopy(model_a).to(compute)
    work_b = copy.deepcopy(model_b).to(compute)
    groups = permutation_groups(work_a, example[:2].to(compute))
    if method == "weights":
        permutations, sweeps = weight_matching(
            groups, work_a.state_dict(), work_b.state_dict(), max_iter=max_iter, seed=seed
        )
    else:
        permutations = activation_matching(groups, work_a, work_b, _batches(loader), compute)
        sweeps = 1
    aligned = copy.deepcopy(model_b)
    state = permute_state(aligned.state_dict(), groups, permutations)
    aligned.load_state_dict(state)
    settings = {"method": method, "max_iter": max_iter, "seed": seed}
    return Alignment(groups, permutations, aligned, sweeps, settings)


def align(
    model_a: nn.Module,
    model_b: nn.Module,
    loader: Iterable | None = None,
    method: str = "weights",
    *,
    max_iter: int = 100,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A copy of ``model_b`` with its hidden units permuted to match ``model_a``
    (:func:`alignment`'s ``model``); it computes the same function as ``model_b``."""
    return alignment(
        model_a, model_b, loader, method, max_iter=max_iter, seed=seed, device=device
    ).model
