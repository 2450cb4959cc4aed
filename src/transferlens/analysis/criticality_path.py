"""The path figure of module criticality (paper Fig. 6): loss and metric along paths from the init.

For one unit (``conv1`` in the paper's figure; by default the first unit of the model's
module map, which is ``conv1`` for a ResNet), every other unit final: the
unit's parameters move along a path from their initial value to their final one
-- the straight line (``direct``) or the polyline through the training checkpoints
(``checkpoints``) -- at points equally spaced by l2 length, with noise
``N(0, sigma^2 I)`` on its parameters at each point (see
:mod:`~transferlens.analysis.criticality` for the noise's seeding).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferlens.analysis.checks import check_count, check_grid, check_task
from transferlens.analysis.evalcache import analysis_device, evaluate_batches, prepare_batches
from transferlens.analysis.perturb import (
    ModuleSlot,
    lerp_values,
    noise_generator,
    noise_seed,
    squared_distance,
)
from transferlens.analysis.statedict import (
    StateLike,
    UnitsLike,
    as_state_dict,
    check_modules,
    default_modules,
    unit_of,
)
from transferlens.errors import UserInputError
from transferlens.metrics import Task

COLUMNS = ("path", "distance", "distance_from_init", "sigma", "loss", "metric")


@dataclass(frozen=True)
class PathGridResult:
    """Loss and metric at each (path, point, sigma) of :func:`path_grid`.

    ``points``: ``(path, distance, distance_from_init, sigma, loss, metric)`` tuples in
    the order evaluated; ``settings``: ``module``, ``n_points``, ``sigmas``,
    ``n_noise``, ``seed``.
    """

    points: tuple[tuple[str, float, float, float, float, float], ...]
    settings: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``path, distance, distance_from_init, sigma, loss, metric``."""
        return pd.DataFrame(list(self.points), columns=list(COLUMNS))


def _path_states(
    slot: ModuleSlot, states: list[dict[str, torch.Tensor]], n_points: int
) -> list[tuple[float, dict[str, torch.Tensor]]]:
    """``n_points`` states equally spaced by l2 length along the polyline through ``states``.

    Returns ``(distance along the path from the first state, module values)``.
    """
    names = slot.parameter_names
    lengths = [squared_distance(a, b, names) ** 0.5 for a, b in zip(states, states[1:])]
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    total = float(cumulative[-1])
    points = []
    for position in np.linspace(0.0, total, n_points):
        # The segment holding ``position``; zero-length segments are stepped over.
        segment = int(np.searchsorted(cumulative, position, side="right")) - 1
        segment = min(max(segment, 0), len(lengths) - 1)
        length = lengths[segment]
        weight = 0.0 if length == 0 else (position - cumulative[segment]) / length
        weight = min(max(weight, 0.0), 1.0)
        values = lerp_values(states[segment], states[segment + 1], weight)
        points.append((float(position), values))
    return points


def path_grid(
    model_final: nn.Module,
    checkpoints: StateLike | Sequence[StateLike],
    loader: Iterable,
    task: Task,
    *,
    module: str | None = None,
    modules: UnitsLike | None = None,
    n_points: int = 11,
    sigmas: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1),
    n_noise: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
) -> PathGridResult:
    """Loss and metric over (distance along a path from the init, noise sigma) for one unit.

    ``module``: a unit of ``modules`` (a list of names, ``{unit: [prefixes]}`` or a
    ``ModuleMap``; default: the model's module map) or, when it names none, any module
    of the network; None (the default) = the first unit (``conv1`` for a ResNet).

    ``checkpoints`` is the initial network (only the ``direct`` path is drawn) or the
    sequence of training checkpoints from the init on (both paths): ``direct`` is
    the straight line from the init to ``model_final``, ``checkpoints`` the
    piecewise-linear path through every checkpoint to ``model_final``. Each path gets
    ``n_points`` points equally spaced by l2 length of the module's parameters; every
    other module stays final. Noise ``N(0, sigma^2 I)`` is added to the module's
    parameters (``n_noise`` draws averaged; sigma 0 means none). Each point: ``path,
    distance`` (l2 length along the path), ``distance_from_init`` (straight l2 to the
    init), ``sigma, loss, metric``. ``progress``, when given, is called with ``conv1 path
    1/2 direct (11 points x 5 sigmas)`` as each path begins (it changes nothing computed).
    """
    check_task(task)
    check_count(n_points, "n_points", minimum=2)
    check_count(n_noise, "n_noise", minimum=1)
    sigmas = check_grid(sigmas, "sigmas", positive=False)
    if any(sigma < 0 for sigma in sigmas):
        raise UserInputError("sigmas must be >= 0")
    sequence = list(checkpoints) if isinstance(checkpoints, list | tuple) else [checkpoints]
    if not sequence:
        raise UserInputError("checkpoints is empty")

    device = analysis_device(device, model_final)
    working = copy.deepcopy(model_final).to(device).eval()
    if modules is None:
        modules = default_modules(model_final)
    if module is None:
        units = check_modules(working.state_dict(), modules)
        if not units:
            raise UserInputError("path_grid needs a module: modules is empty")
        module = next(iter(units))
    module, members = unit_of(module, modules)
    check_modules(working.state_dict(), {module: members})
    slot = ModuleSlot(working, module, members)
    final = slot.values_from(working.state_dict())
    states = [slot.values_from(as_state_dict(c, "checkpoint")) for c in sequence]
    if any(not torch.equal(states[-1][name], final[name]) for name in final):
        states.append(final)
    paths = {"direct": [states[0], final]}
    if len(sequence) > 1:
        paths["checkpoints"] = states

    batches = prepare_batches(loader, device)
    names = slot.parameter_names
    rows = []
    for path_index, (path, path_states) in enumerate(paths.items()):
        if progress is not None:
            progress(
                f"{module} path {path_index + 1}/{len(paths)} {path} "
                f"({n_points} points x {len(sigmas)} sigmas)"
            )
        for point_index, (distance, values) in enumerate(_path_states(slot, path_states, n_points)):
            from_init = squared_distance(values, states[0], names) ** 0.5
            for sigma_index, sigma in enumerate(sigmas):
                draws = 1 if sigma == 0 else n_noise
                loss = metric = 0.0
                for sample in range(draws):
                    index = (path_index * n_points + point_index) * len(sigmas) + sigma_index
                    generator = noise_generator(device, noise_seed(seed, module, index, sample))
                    slot.set(values, sigma, generator)
                    point = evaluate_batches(working, batches, task)
                    loss, metric = loss + point.loss / draws, metric + point.metric / draws
                rows.append((path, distance, from_init, sigma, loss, metric))
    slot.restore()
    settings = {"module": module, "n_points": n_points, "sigmas": sigmas, "n_noise": n_noise,
                "seed": seed}  # fmt: skip
    return PathGridResult(tuple(rows), settings)
