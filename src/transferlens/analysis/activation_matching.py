"""Activation matching (Git Re-Basin, Alg. "activation matching"; Li et al. 2015).

Both networks see the same inputs; at each group's probes (see
:class:`~transferlens.analysis.permutation_groups.Probe`) the correlation of unit ``i``
of A with unit ``j`` of B over every sample (images x positions x tokens) is::

    corr[i, j] = (E[x_i y_j] - E[x_i] E[y_j]) / (std(x_i) std(y_j))

streamed over the loader as float64 running sums of ``x``, ``y``, ``x^2``, ``y^2`` and
``x y^T`` per probe (never all features at once). A group's cost is the sum of its
probes' correlation matrices (query and key for attention), and one assignment per
group (per head set for attention) gives its permutation. A unit with zero variance
correlates 0 with everything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import fx, nn

from transferlens.analysis.permutation_groups import PermutationGroup, Probe
from transferlens.analysis.permutation_trace import trace
from transferlens.analysis.weight_matching import solve_step, steps_of
from transferlens.evaluation import evaluation_mode

Sink = Callable[[Probe, torch.Tensor], None]


class ProbeInterpreter(fx.Interpreter):
    """Runs a traced model, handing the outputs of the probed nodes to ``sink``."""

    def __init__(self, gm: fx.GraphModule, probes: list[Probe], sink: Sink) -> None:
        super().__init__(gm)
        self.by_node: dict[str, list[Probe]] = {}
        for probe in probes:
            if probe.kind == "node":
                self.by_node.setdefault(probe.target, []).append(probe)
        self.sink = sink

    def run_node(self, node: fx.Node) -> Any:
        value = super().run_node(node)
        for probe in self.by_node.get(node.name, ()):
            self.sink(probe, value)
        return value


def probe_units(value: torch.Tensor, probe: Probe, size: int) -> torch.Tensor:
    """The probed units as float64 columns: ``[samples, size]``."""
    units = value.detach().movedim(probe.dim, -1).narrow(-1, probe.offset, size)
    return units.reshape(-1, size).double()


class Moments:
    """Running sums for the correlation of ``size`` units of A with ``size`` of B."""

    def __init__(self, size: int, device: torch.device) -> None:
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.count = 0
        self.sx, self.sy, self.sxx, self.syy = zeros(size), zeros(size), zeros(size), zeros(size)
        self.sxy = zeros(size, size)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.count += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.sxx += (x * x).sum(0)
        self.syy += (y * y).sum(0)
        self.sxy += x.T @ y

    def correlation(self) -> torch.Tensor:
        n = max(self.count, 1)
        mx, my = self.sx / n, self.sy / n
        cov = self.sxy / n - torch.outer(mx, my)
        sd_x = (self.sxx / n - mx * mx).clamp_min(0).sqrt()
        sd_y = (self.syy / n - my * my).clamp_min(0).sqrt()
        scale = torch.outer(sd_x, sd_y)
        return torch.where(scale > 0, cov / scale.clamp_min(1e-300), torch.zeros_like(cov))


def _capture(model: nn.Module, gm: fx.GraphModule, probes: list[Probe], sink: Sink) -> list:
    """Hooks for the module probes (attention's ``qkv`` output, ``proj`` input)."""
    handles = []
    for probe in probes:
        module = model.get_submodule(probe.target) if probe.kind != "node" else None
        if probe.kind == "output":
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, probe=probe: sink(probe, out)))  # fmt: skip
        elif probe.kind == "input":
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, probe=probe: sink(probe, args[0])))  # fmt: skip
    return handles


@torch.no_grad()
def activation_matching(
    groups: tuple[PermutationGroup, ...],
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Iterable[torch.Tensor],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """``{group name: permutation of B's units}`` from the correlations over ``batches``
    (input tensors), both models in eval mode on ``device``."""
    probes = [(group, probe) for group in groups for probe in group.probes]
    moments = {(g.name, p): Moments(g.size, device) for g, p in probes}
    size = {p: g.size for g, p in probes}
    seen: dict[str, dict[Probe, torch.Tensor]] = {"a": {}, "b": {}}
    traced = {"a": trace(model_a), "b": trace(model_b)}
    plain = [p for _, p in probes]
    handles = []
    for side, model in (("a", model_a), ("b", model_b)):

        def sink(probe: Probe, value: torch.Tensor, side: str = side) -> None:
            seen[side][probe] = probe_units(value, probe, size[probe])

        handles += _capture(model, traced[side], plain, sink)
    try:
        with evaluation_mode([model_a, model_b]):
            for inputs in batches:
                inputs = inputs.to(device)
                for side in ("a", "b"):
                    seen[side].clear()
                    interpreter = ProbeInterpreter(
                        traced[side], plain,
                        lambda probe, value, side=side: seen[side].__setitem__(
                            probe, probe_units(value, probe, size[probe])),
                    )  # fmt: skip
                    interpreter.run(inputs)
                for group, probe in probes:
                    moments[(group.name, probe)].add(seen["a"][probe], seen["b"][probe])
    finally:
        for handle in handles:
            handle.remove()
    perms: dict[str, torch.Tensor] = {}
    for step in steps_of(groups):
        costs = [
            sum(moments[(groups[i].name, p)].correlation() for p in groups[i].probes) for i in step
        ]
        for index, perm in zip(step, solve_step(groups, step, costs)):
            perms[groups[index].name] = perm.cpu()
    return perms
