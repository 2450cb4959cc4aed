"""Weight matching (Ainsworth, Hayase & Srinivasa, ICLR 2023, "Git Re-Basin", Alg. 1).

For permutations ``P`` of every group, maximise the summed inner product of the two
networks' weights, ``sum_W <W_a, P(W_b)>`` where ``P(W_b)`` permutes each axis of
``W_b`` by its group's permutation. For one group ``g`` with the others held fixed this
is a linear assignment: ``C_g = sum over axes (W, k) of g  A_k B_k^T``, with ``A_k`` the
units-by-rest matrix of ``W_a`` along axis ``k`` and ``B_k`` that of ``W_b`` with all its
*other* axes permuted; ``P_g = argmax_p sum_i C_g[i, p[i]]``. Each term ``A_k B_k^T``
is kept and recomputed only after a permutation it depends on changed. Coordinate descent visits
the groups in a random (seeded) order each sweep, keeps a group's new permutation only
if it raises the objective by more than a relative 1e-12, and stops after a sweep that
changed nothing (or ``max_iter`` sweeps). Attention groups of one module are solved
together (:func:`~transferlens.analysis.assignment.assign_heads`). Cost matrices are
float64.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from transferlens.analysis.assignment import assign, assign_heads, assignment_value
from transferlens.analysis.permutation_groups import Axis, PermutationGroup, permute_axis

RELATIVE_TOLERANCE = 1e-12


def steps_of(groups: tuple[PermutationGroup, ...]) -> list[list[int]]:
    """The units of coordinate descent: one group alone, or all groups of a head set."""
    steps: list[list[int]] = []
    head_sets: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        if group.head_set is None:
            steps.append([index])
        elif group.head_set in head_sets:
            head_sets[group.head_set].append(index)
        else:
            head_sets[group.head_set] = [index]
            steps.append(head_sets[group.head_set])
    return steps


def solve_step(groups: tuple[PermutationGroup, ...], step: list[int],
               costs: list[torch.Tensor]) -> list[torch.Tensor]:  # fmt: skip
    """The best permutations of the groups in ``step`` for their cost matrices."""
    if len(step) == 1 and groups[step[0]].heads == 1:
        return [assign(costs[0])]
    return assign_heads(costs, groups[step[0]].heads)


def weight_matching(
    groups: tuple[PermutationGroup, ...],
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    *,
    max_iter: int = 100,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], int]:
    """Permutations of ``state_b``'s groups matching ``state_a`` (see the module docstring).

    Returns ``({group name: permutation}, sweeps run)``.
    """
    keys = {axis.key for group in groups for axis in group.axes}
    a = {key: state_a[key].detach().double() for key in keys}
    b = {key: state_b[key].detach().double() for key in keys}
    device = next(iter(a.values())).device if a else torch.device("cpu")
    perms = [torch.arange(group.size, device=device) for group in groups]
    touching: dict[str, list[tuple[int, Axis]]] = {}
    for index, group in enumerate(groups):
        for axis in group.axes:
            touching.setdefault(axis.key, []).append((index, axis))

    versions = [0] * len(groups)  # bumped whenever a group's permutation changes
    terms: dict[tuple[int, Axis], tuple[tuple[int, ...], torch.Tensor]] = {}
    rows_a: dict[tuple[str, Axis], torch.Tensor] = {}  # A's rows never change

    def term(index: int, axis: Axis) -> torch.Tensor:
        """``A_k B_k^T`` for one axis of group ``index``; recomputed only when the
        permutation of one of the tensor's other axes changed since it was computed."""
        others = [(i, other) for i, other in touching[axis.key] if other.axis != axis.axis]
        stamp = tuple(versions[i] for i, _ in others)
        cached = terms.get((index, axis))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        size = groups[index].size
        # B's rows: the axis moved first (a view), so that permuting the other axes
        # (index_select) already writes the rows contiguously.
        tensor = b[axis.key].narrow(axis.axis, axis.offset, size).movedim(axis.axis, 0)
        for i, other in others:
            moved = other.axis + 1 if other.axis < axis.axis else other.axis
            tensor = permute_axis(tensor, Axis(other.key, moved, other.offset), perms[i])
        if (axis.key, axis) not in rows_a:
            rows_a[(axis.key, axis)] = _units(a[axis.key], axis, size).contiguous()
        value = rows_a[(axis.key, axis)] @ tensor.reshape(size, -1).T
        terms[(index, axis)] = (stamp, value)
        return value

    totals: dict[int, tuple[tuple[int, ...], torch.Tensor]] = {}

    def cost(index: int) -> torch.Tensor:
        """``C_g``: the sum of its terms, re-added only when one of them changed."""
        values = [term(index, axis) for axis in groups[index].axes]
        stamp = tuple(terms[(index, axis)][0] for axis in groups[index].axes)
        stamp = tuple(v for s in stamp for v in s)
        if index in totals and totals[index][0] == stamp:
            return totals[index][1]
        total = values[0].clone()
        for value in values[1:]:
            total += value
        totals[index] = (stamp, total)
        return total

    rng = np.random.default_rng(seed)
    steps = steps_of(groups)
    sweeps = 0
    while sweeps < max_iter:
        sweeps += 1
        progress = False
        for step_index in rng.permutation(len(steps)):
            step = steps[step_index]
            costs = [cost(index) for index in step]
            new = solve_step(groups, step, costs)
            old_value = sum(assignment_value(c, perms[i]) for c, i in zip(costs, step))
            new_value = sum(assignment_value(c, p) for c, p in zip(costs, new))
            if new_value > old_value + RELATIVE_TOLERANCE * max(1.0, abs(old_value)):
                for index, perm in zip(step, new):
                    perms[index] = perm
                    versions[index] += 1
                progress = True
        if not progress:
            break
    return {group.name: perm.cpu() for group, perm in zip(groups, perms)}, sweeps


def _units(tensor: torch.Tensor, axis: Axis, size: int) -> torch.Tensor:
    """The ``size`` units of ``axis`` as rows: ``[size, everything else]``."""
    return tensor.narrow(axis.axis, axis.offset, size).movedim(axis.axis, 0).reshape(size, -1)
