"""The path figure of module criticality (paper Fig. 6): loss and metric along paths from the init.

For one unit (``conv1`` in the paper's figure; by default the first unit of the model's
module map, which is ``conv1`` for a ResNet), every other unit final: the
unit's parameters move along a path from their initial value to their final one
-- the straight line (``direct``) or the polyline through the training checkpoints
(``checkpoints``) -- at points equally spaced by l2 length, with noise
``N(0, sigma^2 I)`` on its parameters at each point (see
:mod:`~transferlens.analysis.criticality` for the noise's seeding).

Intervals over the evaluation set (``n_bootstrap`` > 0): each evaluation keeps its
per-example losses (and correctness, or scores for mean ROC-AUC), and the seeded
bootstrap (:func:`~transferlens.analysis.stats.bootstrap_interval`, the same resamples
at every point) resamples them: ``loss_low/high`` is the interval of the mean over
the resampled examples of their loss averaged over the draws; ``metric_low/high`` of
the mean over draws of the resampled examples' metric (accuracy: their mean
correctness; ROC-AUC: recomputed per resample, as
:func:`~transferlens.analysis.rewinding.metric_interval`). No pass is repeated; the
noise draws are fixed.
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
from transferlens.analysis.evalcache import analysis_device, prepare_batches
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
from transferlens.analysis.stats import bootstrap_interval, check_n_bootstrap
from transferlens.errors import UserInputError

# evaluate()'s own batches: logits produced exactly as evaluate_batches produces them, so
# the loss and metric columns are the same numbers as before the per-example terms.
from transferlens.evaluation import logit_batches
from transferlens.metrics import Task, correct_predictions, mean_roc_auc, task_loss

COLUMNS = ("path", "distance", "distance_from_init", "sigma", "loss", "metric")
INTERVAL_COLUMNS = ("loss_low", "loss_high", "metric_low", "metric_high")


@dataclass(frozen=True)
class PathGridResult:
    """Loss and metric at each (path, point, sigma) of :func:`path_grid`.

    ``points``: ``(path, distance, distance_from_init, sigma, loss, metric, loss_low,
    loss_high, metric_low, metric_high)`` tuples in the order evaluated (bounds NaN
    without ``n_bootstrap``); ``settings``: ``module``, ``n_points``, ``sigmas``,
    ``n_noise``, ``seed``, ``n_bootstrap``.
    """

    points: tuple[tuple[Any, ...], ...]
    settings: dict[str, Any]

    def to_frame(self) -> pd.DataFrame:
        """Columns ``path, distance, distance_from_init, sigma, loss, metric, loss_low,
        loss_high, metric_low, metric_high``."""
        return pd.DataFrame(list(self.points), columns=list(COLUMNS + INTERVAL_COLUMNS))


@dataclass(frozen=True)
class _Terms:
    """One evaluation: ``loss`` and ``metric`` as :func:`~transferlens.evaluation.evaluate`
    computes them, each example's float64 loss, and its outcome (multiclass: correctness
    as float64; multilabel: float32 scores, with ``labels``)."""

    loss: float
    metric: float
    losses: np.ndarray
    outcomes: torch.Tensor
    labels: torch.Tensor | None


def _evaluate_terms(model: nn.Module, batches: Iterable, task: Task) -> _Terms:
    """One pass: evaluate()'s loss and metric (the same operations, bit for bit) and
    the per-example terms behind them."""
    device = batches.device  # type: ignore[attr-defined]  (PreparedBatches)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    losses, outcomes, labels, count = [], [], [], 0
    with torch.inference_mode():
        for logits, targets in logit_batches(model, batches, device, False):
            per_example = task_loss(logits, targets, task, reduction="none").double()
            loss_sum += per_example.sum()
            losses.append(per_example.cpu())
            count += targets.shape[0]
            if task == "multiclass":
                outcomes.append(correct_predictions(logits, targets).cpu())
            else:
                outcomes.append(logits.cpu())
                labels.append(targets.float().cpu())
    loss = float(loss_sum.item()) / count
    if task == "multiclass":
        hits = torch.cat(outcomes)
        return _Terms(loss, int(hits.sum()) / count, torch.cat(losses).numpy(), hits.double(), None)
    scores, all_labels = torch.cat(outcomes), torch.cat(labels)
    metric = mean_roc_auc(scores, all_labels)
    return _Terms(loss, metric, torch.cat(losses).numpy(), scores, all_labels)


def _point_intervals(
    draws: list[_Terms], task: Task, n_bootstrap: int, seed: int
) -> tuple[float, float, float, float]:
    """(loss_low, loss_high, metric_low, metric_high) over resampled examples; draws
    averaged as the point's own loss and metric are. ``n_bootstrap = 0``: NaN."""
    if n_bootstrap == 0:
        return (float("nan"),) * 4  # type: ignore[return-value]
    losses = sum(d.losses for d in draws) / len(draws)
    loss_low, loss_high = bootstrap_interval(losses, n_bootstrap, seed=seed)
    if task == "multiclass":
        correct = (sum(d.outcomes for d in draws) / len(draws)).numpy()
        metric_low, metric_high = bootstrap_interval(correct, n_bootstrap, seed=seed)
    else:
        labels = draws[0].labels

        def statistic(indices: np.ndarray) -> float:
            rows = torch.as_tensor(indices)
            return sum(mean_roc_auc(d.outcomes[rows], labels[rows]) for d in draws) / len(draws)

        n = len(draws[0].losses)
        metric_low, metric_high = bootstrap_interval(statistic, n_bootstrap, seed=seed, n=n)
    return loss_low, loss_high, metric_low, metric_high


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
    n_bootstrap: int = 0,
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
    ``n_bootstrap`` > 0: ``loss_low/high``, ``metric_low/high``, the 95% bootstrap
    interval over the examples from the same evaluations (module docstring; resamples
    from ``seed``); 0 (the default): NaN.
    """
    check_task(task)
    check_count(n_points, "n_points", minimum=2)
    check_count(n_noise, "n_noise", minimum=1)
    check_n_bootstrap(n_bootstrap)
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
                evaluated = []
                for sample in range(draws):
                    index = (path_index * n_points + point_index) * len(sigmas) + sigma_index
                    generator = noise_generator(device, noise_seed(seed, module, index, sample))
                    slot.set(values, sigma, generator)
                    point = _evaluate_terms(working, batches, task)
                    loss, metric = loss + point.loss / draws, metric + point.metric / draws
                    evaluated.append(point)
                bounds = _point_intervals(evaluated, task, n_bootstrap, seed)
                rows.append((path, distance, from_init, sigma, loss, metric, *bounds))
    slot.restore()
    settings = {"module": module, "n_points": n_points, "sigmas": sigmas, "n_noise": n_noise,
                "seed": seed, "n_bootstrap": n_bootstrap}  # fmt: skip
    return PathGridResult(tuple(rows), settings)
