"""Weight matching's shortcuts compute what the plain algorithm computes.

``weight_matching`` keeps each cost matrix up to date by rank-``|D|`` updates over the
units that moved, adds constant terms once, skips steps whose costs did not change
and computes in float32 by default. The reference here does none of that: every cost
from scratch in float64 at every step (Git Re-Basin, Alg. 1). With float64 products
the two must agree on every permutation and on the number of sweeps; in float32,
every cost matrix handed to the solver must equal the reference's for the same
permutations to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import transferlens.analysis.weight_matching as wm
from test_align import convnext, fixup, vit
from transferlens.analysis.assignment import assignment_value
from transferlens.analysis.permutation_groups import Axis, PermutationGroup, permute_state
from transferlens.analysis.unit_alignment import alignment

Perms = dict[str, torch.Tensor]


def reference_cost(groups: tuple[PermutationGroup, ...], state_a: dict, state_b: dict,
                   perms: Perms, index: int) -> torch.Tensor:  # fmt: skip
    """``C_g = sum over g's axes of A_k B_k^T`` in float64, B with every other group's
    axes permuted (no group here holds two axes of one tensor)."""
    others = tuple(g for i, g in enumerate(groups) if i != index)
    b = permute_state({k: v.double() for k, v in state_b.items()}, others, perms)
    group = groups[index]
    total = torch.zeros(group.size, group.size, dtype=torch.float64)
    for axis in group.axes:
        units_a, units_b = (
            x.narrow(axis.axis, axis.offset, group.size).movedim(axis.axis, 0).reshape(group.size, -1)
            for x in (state_a[axis.key].double(), b[axis.key])
        )  # fmt: skip
        total += units_a @ units_b.T
    return total


def accepts(costs: list[torch.Tensor], old: list[torch.Tensor], new: list[torch.Tensor]) -> bool:
    old_value = sum(assignment_value(c, p) for c, p in zip(costs, old))
    new_value = sum(assignment_value(c, p) for c, p in zip(costs, new))
    return new_value > old_value + wm.RELATIVE_TOLERANCE * max(1.0, abs(old_value))


def reference_matching(groups: tuple[PermutationGroup, ...], state_a: dict, state_b: dict,
                       max_iter: int, seed: int = 0) -> tuple[Perms, int]:  # fmt: skip
    """Coordinate descent with every cost recomputed from scratch, every step solved."""
    perms = {g.name: torch.arange(g.size) for g in groups}
    rng = np.random.default_rng(seed)
    steps = wm.steps_of(groups)
    sweeps = 0
    while sweeps < max_iter:
        sweeps += 1
        progress = False
        for step_index in rng.permutation(len(steps)):
            step = steps[step_index]
            costs = [reference_cost(groups, state_a, state_b, perms, i) for i in step]
            new = wm.solve_step(groups, step, costs)
            if accepts(costs, [perms[groups[i].name] for i in step], new):
                perms.update({groups[i].name: p for i, p in zip(step, new)})
                progress = True
        if not progress:
            break
    return perms, sweeps


def three_axis_case() -> tuple[tuple[PermutationGroup, ...], dict, dict]:
    """Synthetic groups: a tensor permuted on three axes, and a fused tensor holding
    two groups at offsets of one axis (as timm's ``qkv``)."""
    groups = (
        PermutationGroup("g0", 4, (Axis("w3", 0), Axis("m01", 0), Axis("fused", 1)), ()),
        PermutationGroup("g1", 5, (Axis("w3", 1), Axis("m01", 1), Axis("fused", 0, 0)), ()),
        PermutationGroup("g2", 6, (Axis("w3", 2), Axis("v2", 0)), ()),
        PermutationGroup("g3", 5, (Axis("fused", 0, 5), Axis("u3", 0)), ()),
    )
    shapes = {"w3": (4, 5, 6), "m01": (4, 5), "fused": (10, 4), "v2": (6,), "u3": (5,)}

    def state(seed: int) -> dict:
        generator = torch.Generator().manual_seed(seed)
        return {k: torch.randn(shape, generator=generator) for k, shape in shapes.items()}

    return groups, state(0), state(1)


def family_case(name: str) -> tuple[tuple[PermutationGroup, ...], dict, dict]:
    build = {"fixup": fixup, "vit": vit, "convnext": convnext}[name]
    model_a, model_b = build(0), build(1)
    groups = alignment(model_a, model_a, max_iter=1).groups
    return groups, model_a.state_dict(), model_b.state_dict()


CASES = {"three_axis": three_axis_case, **{n: (lambda n=n: family_case(n)) for n in ("fixup", "vit", "convnext")}}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_float64_matching_equals_the_plain_algorithm(case: str) -> None:
    groups, state_a, state_b = CASES[case]()
    expected, expected_sweeps = reference_matching(groups, state_a, state_b, max_iter=20)
    got, sweeps = wm.weight_matching(groups, state_a, state_b, max_iter=20, dtype=torch.float64)
    assert sweeps == expected_sweeps
    for name, perm in expected.items():
        assert torch.equal(got[name], perm), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_every_cost_solved_equals_the_recomputed_cost(case: str, dtype: torch.dtype,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    groups, state_a, state_b = CASES[case]()
    perms = {g.name: torch.arange(g.size) for g in groups}
    checked = []
    solve = wm.solve_step

    def solve_and_check(groups_, step, costs):
        new = solve(groups_, step, costs)
        for index, cost in zip(step, costs):
            expected = reference_cost(groups, state_a, state_b, perms, index)
            scale = expected.abs().max().item()
            tolerance = (1e-5 if dtype == torch.float32 else 1e-12) * scale
            torch.testing.assert_close(cost.double(), expected, rtol=0, atol=tolerance)
            checked.append(index)
        if accepts(costs, [perms[groups[i].name] for i in step], new):
            perms.update({groups[i].name: p for i, p in zip(step, new)})
        return new

    monkeypatch.setattr(wm, "solve_step", solve_and_check)
    result, _ = wm.weight_matching(groups, state_a, state_b, max_iter=20, dtype=dtype)
    assert set(checked) == set(range(len(groups)))
    for name, perm in perms.items():  # the replayed decisions are the function's own
        assert torch.equal(result[name], perm), name
