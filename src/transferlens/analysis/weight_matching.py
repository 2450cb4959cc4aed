"""Weight matching (Ainsworth, Hayase & Srinivasa, ICLR 2023, "Git Re-Basin", Alg. 1).

For permutations ``P`` of every group, maximise the summed inner product of the two
networks' weights, ``sum_W <W_a, P(W_b)>`` where ``P(W_b)`` permutes each axis of
``W_b`` by its group's permutation. For one group ``g`` with the others held fixed this
is a linear assignment: ``C_g = sum over axes (W, k) of g  A_k B_k^T``, with ``A_k`` the
units-by-rest matrix of ``W_a`` along axis ``k`` and ``B_k`` that of ``W_b`` with all its
*other* axes permuted; ``P_g = argmax_p sum_i C_g[i, p[i]]``. Coordinate descent visits
the groups in a random (seeded) order each sweep, keeps a group's new permutation only
if it raises the objective by more than a relative 1e-12, and stops after a sweep that
changed nothing (or ``max_iter`` sweeps). Attention groups of one module are solved
together (:func:`~transferlens.analysis.assignment.assign_heads`).

How it is kept cheap (the weight products dominated; now they and scipy's assignments
take about half each; benchmarks/align.py):

* Each ``C_g`` is one buffer, and every product is added into it by BLAS (``addmm_``):
  no per-term matrices, no extra passes over ``n x n`` matrices, and gathers go to
  reused scratch buffers (fresh large CPU tensors cost page faults on every use).
* A term whose tensor has no other permuted axis (a bias, a norm, the classifier's
  input, the stem's kernel) never changes: it is added once.
* A term whose other axis went from ``p_old`` to ``p_new`` is updated, not recomputed:
  ``C_g += sum_{c in D} A[:, c] (B[:, p_new[c]] - B[:, p_old[c]])^T`` over the changed
  positions ``D`` only (ResNet-50: after two sweeps, 5-25% of a sweep's units move).
* A step whose cost matrices did not change since it was last solved is not solved
  again: scipy's solver is deterministic, so it would return the same answer.
* ``dtype`` float32 (default): the weights' own precision, twice BLAS's float64 speed.
  An entry of ``C_g`` is a dot product of length ``K`` (every contribution and
  update added into it), off by at most ``K u sum |a||b|`` (u = 2^-24; ~sqrt(K) u
  typically), so an assignment's value is off by at most ``n`` times that. The
  chosen assignment can differ from the float64 one only where another assignment is
  within that margin of the best -- a near-tie, where either is an equally good
  coordinate step. Exact recoveries are far from ties (with the other groups aligned,
  an assignment ``p`` loses ``1/2 sum_i |a_i - a_p(i)|^2`` to the true one, squared
  distances between whole units) and stay exact (tests/test_align.py).
  ``dtype=torch.float64`` gives the float64 reference. Assignment values are summed
  in float64 either way, so that equal assignments compare equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from transferlens.analysis.assignment import assign, assign_heads, assignment_value
from transferlens.analysis.permutation_groups import Axis, PermutationGroup

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


@dataclass
class _Term:
    """One term ``A_k B_k^T`` of a cost, for one axis of one group.

    ``a``/``b``: the two tensors narrowed to the group's units, that axis moved first
    (contiguous); ``others``: ``(group index, Axis)`` of their other permuted axes,
    ``Axis.axis`` counted in the moved layout; ``used``: those groups' permutations
    that the cost holds this term with (None: not added yet).
    """

    a: torch.Tensor
    b: torch.Tensor
    others: tuple[tuple[int, Axis], ...]
    used: list[torch.Tensor] | None = None


class _Scratch:
    """Reused buffers by name: a fresh large CPU tensor is page-faulted in on every
    use (glibc hands large blocks back to the OS when they are freed)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def gather(
        self, name: str, tensor: torch.Tensor, dim: int, index: torch.Tensor
    ) -> torch.Tensor:
        """``tensor.index_select(dim, index)`` written into buffer ``name``."""
        shape = list(tensor.shape)
        shape[dim] = len(index)
        numel = int(np.prod(shape))
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != tensor.dtype:
            buffer = self.buffers[name] = torch.empty(
                numel, dtype=tensor.dtype, device=tensor.device
            )
        return torch.index_select(tensor, dim, index, out=buffer[:numel].view(shape))


def _moved(tensor: torch.Tensor, axis: Axis, size: int) -> torch.Tensor:
    """The ``size`` units of ``axis`` first (a view)."""
    return tensor.narrow(axis.axis, axis.offset, size).movedim(axis.axis, 0)


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    """``[units, everything else]``."""
    return tensor.reshape(len(tensor), -1)


def _permute_others(scratch: _Scratch, name: str, tensor: torch.Tensor, term: _Term,
                    perms: list[torch.Tensor], skip: int | None = None) -> torch.Tensor:  # fmt: skip
    """``tensor`` with every other axis of ``term`` (but those on dim ``skip``) permuted
    by ``perms`` (one per other axis); several may share a dim at different offsets."""
    dims = sorted({other.axis for _, other in term.others} - {skip})
    for n, dim in enumerate(dims):
        index = torch.arange(tensor.shape[dim], device=tensor.device)
        for (_, other), perm in zip(term.others, perms):
            if other.axis == dim:
                index[other.offset : other.offset + len(perm)] = perm + other.offset
        tensor = scratch.gather(f"{name}{n % 2}", tensor, dim, index)
    return tensor


def _add_first(
    total: torch.Tensor, term: _Term, perms: list[torch.Tensor], scratch: _Scratch
) -> None:
    """Add the term, computed whole with the current permutations, to ``total``."""
    term.used = [perms[i] for i, _ in term.others]
    b = _permute_others(scratch, "full", term.b, term, term.used)
    total.addmm_(_rows(term.a), _rows(b).T)


def _add_changes(
    total: torch.Tensor, term: _Term, perms: list[torch.Tensor], scratch: _Scratch
) -> bool:
    """Bring the term held in ``total`` up to the current permutations, one other axis
    at a time (the axes after it still at their old permutations: the changes
    telescope), each over its changed positions only. False: nothing changed."""
    assert term.used is not None
    changed_any = False
    for k, (i, axis) in enumerate(term.others):
        old, new = term.used[k], perms[i]
        if old is new or torch.equal(old, new):
            continue
        changed = torch.nonzero(old != new).flatten()
        a = scratch.gather("a", term.a, axis.axis, changed + axis.offset)
        b_new = scratch.gather("new", term.b, axis.axis, new[changed] + axis.offset)
        b_old = scratch.gather("old", term.b, axis.axis, old[changed] + axis.offset)
        if len({other.axis for _, other in term.others}) > 1:  # rare: 3+ permuted axes
            b_new = _permute_others(scratch, "new", b_new, term, term.used, skip=axis.axis)
            b_old = _permute_others(scratch, "old", b_old, term, term.used, skip=axis.axis)
        total.addmm_(_rows(a), _rows(b_new.sub_(b_old)).T)
        term.used[k] = new
        changed_any = True
    return changed_any


def weight_matching(
    groups: tuple[PermutationGroup, ...],
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    *,
    max_iter: int = 100,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, torch.Tensor], int]:
    """Permutations of ``state_b``'s groups matching ``state_a`` (see the module docstring).

    ``dtype``: the precision of the products and cost matrices (float32 or float64).
    Returns ``({group name: permutation}, sweeps run)``.
    """
    keys = {axis.key for group in groups for axis in group.axes}
    a = {key: state_a[key].detach().to(dtype) for key in keys}
    b = {key: state_b[key].detach().to(dtype) for key in keys}
    device = next(iter(a.values())).device if a else torch.device("cpu")
    perms = [torch.arange(group.size, device=device) for group in groups]
    touching: dict[str, list[tuple[int, Axis]]] = {}
    for index, group in enumerate(groups):
        for axis in group.axes:
            touching.setdefault(axis.key, []).append((index, axis))

    totals: list[torch.Tensor] = []  # C_g
    dynamic: list[list[_Term]] = []  # the terms of C_g that depend on other permutations
    for group in groups:
        total = torch.zeros(group.size, group.size, dtype=dtype, device=device)
        terms = []
        for axis in group.axes:
            others = tuple(
                (i, Axis(o.key, o.axis + 1 if o.axis < axis.axis else o.axis, o.offset))
                for i, o in touching[axis.key]
                if o.axis != axis.axis
            )
            rows_a, rows_b = (_moved(x[axis.key], axis, group.size) for x in (a, b))
            if others:
                terms.append(_Term(rows_a.contiguous(), rows_b.contiguous(), others))
            else:  # never changes: added once
                total.addmm_(_rows(rows_a), _rows(rows_b).T)
        totals.append(total)
        dynamic.append(terms)

    versions = [0] * len(groups)  # bumped whenever C_g changes
    scratch = _Scratch()

    def cost(index: int) -> torch.Tensor:
        """``C_g`` with every term brought up to the current permutations."""
        for term in dynamic[index]:
            if term.used is None:
                _add_first(totals[index], term, perms, scratch)
                versions[index] += 1
            elif _add_changes(totals[index], term, perms, scratch):
                versions[index] += 1
        return totals[index]

    rng = np.random.default_rng(seed)
    steps = steps_of(groups)
    solved_at: dict[int, tuple[int, ...]] = {}  # the cost versions a step was last solved with
    sweeps = 0
    while sweeps < max_iter:
        sweeps += 1
        progress = False
        for step_index in rng.permutation(len(steps)):
            step = steps[step_index]
            costs = [cost(index) for index in step]
            stamp = tuple(versions[index] for index in step)
            if solved_at.get(step_index) == stamp:
                continue  # same costs, same (deterministic) answer: nothing to gain
            solved_at[step_index] = stamp
            new = solve_step(groups, step, costs)
            old_value = sum(assignment_value(c, perms[i]) for c, i in zip(costs, step))
            new_value = sum(assignment_value(c, p) for c, p in zip(costs, new))
            if new_value > old_value + RELATIVE_TOLERANCE * max(1.0, abs(old_value)):
                for index, perm in zip(step, new):
                    perms[index] = perm
                progress = True
        if not progress:
            break
    return {group.name: perm.cpu() for group, perm in zip(groups, perms)}, sweeps
