"""Analysis 6: module criticality (Chatterji, Neyshabur & Sedghi, ICLR 2020).

For module i with initial parameters theta0 and final thetaF (every other module
final), ``theta(alpha) = (1 - alpha) theta0 + alpha thetaF`` and noise
``u ~ N(0, sigma^2 I)`` on that module's parameters only::

    mu_i = min over the (alpha, sigma) grid of  alpha^2 ||thetaF - theta0||^2 / sigma^2
           subject to  E_u[ L(theta(alpha) + u) ] <= eps

with E_u estimated by the mean over ``n_noise`` draws; network criticality = sum_i mu_i.
``eps`` and the sigma grid follow one of two definitions
(:mod:`~transferlens.analysis.criticality_definition`): ``epsilon`` (the default: an
absolute bound on the training loss, sigmas log-spaced multiples of each module's RMS,
and a criticality of NaN where the minimiser sits on the sigma grid's edge) or
``reference`` (``eps = tolerance * L(thetaF)``, absolute sigmas, the value kept even
on the edge). Each module's ``resolved`` flag applies the same edge rule to both.

The reference definition follows the public reference (google-research/meta-dataset,
``analysis/transferability/criticality.py``): alphas ``linspace(0, 1, 11)``, sigmas
``linspace(1e-16, 1, 11)``, 10 draws per point, ``tolerance = 1.01`` times the
*unperturbed* loss of the final network. Both: noise on the module's parameters only; the
loss is the task loss (cross-entropy / BCE) on whatever data is given -- the paper
uses training data, which is what the CLI passes. Ties between grid points of equal
objective go to the first point in the reference's order (sigma-major, then alpha),
as its ``argmin`` does; ``alpha = 0`` (the module fully rewound) has objective 0.
Differences: the grid is float64 rather than float32; floating buffers of the module
(BatchNorm statistics) are interpolated with its parameters and never perturbed; and
when no grid point is feasible the criticality is ``inf`` (the minimum over an empty
set) with alpha and sigma NaN (NaN under ``epsilon``), where the reference's argmin
over an all-infinite array would report the objective of its first point, 0.

Search without waste, yet the same result as the full grid:

- the objective of a point is known before evaluating it, so points are visited in
  increasing (objective, reference order) and the search stops at the first feasible
  one: every point skipped has an objective no better (branch and bound);
- losses are non-negative and a float sum of non-negative terms never decreases, so
  once the running sum over the draws (and the batches of the current draw) proves
  the mean above eps -- tested with the very expression the full mean is tested
  with -- the point is infeasible whatever the remaining batches and draws hold, and
  they are skipped;
- a draw whose noise vanishes in rounding (sigma = 1e-16 next to float32 weights
  leaves every parameter bit for bit unchanged) is the noiseless network at that
  alpha: its loss is evaluated once and reused by every such draw.

Each draw's noise comes from its own seed (:func:`~transferlens.analysis.perturb.noise_seed`),
so skipped points do not shift the noise of the others: ``search="full"`` evaluates
every point and every draw and returns identical values.
:attr:`CriticalityResult.n_forward_passes` counts the passes over the data begun (a
pass cut short counts as a whole one; the reference evaluation included),
:attr:`CriticalityResult.n_forward_batches` the batches evaluated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferlens.analysis.checks import check_count, check_grid, check_task
from transferlens.analysis.criticality_definition import (
    DEFAULT_EPSILON,
    EPSILON,
    check_definition,
    module_rms,
    relative_sigma_grid,
    resolved,
)
from transferlens.analysis.evalcache import (
    PreparedBatches,
    analysis_device,
    evaluate_batches,
    prepare_batches,
)
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
    check_same_layout,
    default_modules,
    under_any,
    unit_of,
)
from transferlens.errors import UserInputError
from transferlens.metrics import Task, task_loss

NETWORK = "network"
SEARCHES = ("pruned", "full")


def criticality_grid(
    n_alphas: int = 11, n_sigmas: int = 11
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The reference's grid: alphas ``linspace(0, 1, n_alphas)``, sigmas ``linspace(1e-16, 1, n_sigmas)``."""
    check_count(n_alphas, "the number of alphas", minimum=2)
    check_count(n_sigmas, "the number of sigmas", minimum=2)
    alphas = tuple(float(a) for a in np.linspace(0.0, 1.0, n_alphas))
    sigmas = tuple(float(s) for s in np.linspace(1e-16, 1.0, n_sigmas))
    return alphas, sigmas


DEFAULT_ALPHAS, DEFAULT_SIGMAS = criticality_grid()


@dataclass(frozen=True)
class ModuleCriticality:
    """One module: ``criticality`` mu_i at the minimiser (``alpha``, ``sigma``).

    No feasible grid point: ``criticality`` is ``inf`` (NaN under ``epsilon``), ``alpha``
    and ``sigma`` NaN. ``resolved``: the grid minimum is not on the sigma grid's edge
    (:func:`~transferlens.analysis.criticality_definition.resolved`); under ``epsilon``
    an unresolved criticality is NaN while ``alpha``, ``sigma`` still say where the grid
    minimum sat. ``rewind_metric``: the metric with the module alone rewound to its
    initial value; ``loss_at_minimum``: the mean loss over the draws at the minimiser.
    """

    module: str
    rewind_metric: float
    criticality: float
    alpha: float
    sigma: float
    loss_at_minimum: float
    resolved: bool = True


@dataclass(frozen=True)
class CriticalityResult:
    """Every module's criticality and the network's (their sum), with what the search cost.

    ``reference_loss``: L(thetaF); ``epsilon``: the loss bound; ``final_metric``: the
    final network's metric on the metric data. ``n_forward_passes`` /
    ``n_forward_batches``: passes over the data begun and batches evaluated (the
    reference evaluation included); ``n_full_grid_*``: what the full grid costs.
    ``settings``: ``definition``, ``modules``, ``alphas``, ``sigmas`` (relative to each
    module's RMS under ``epsilon``), ``n_noise``, ``tolerance``, ``seed``, ``search``.
    """

    modules: tuple[ModuleCriticality, ...]
    network_criticality: float
    reference_loss: float
    epsilon: float
    final_metric: float
    n_forward_passes: int
    n_forward_batches: int
    n_full_grid_passes: int
    n_full_grid_batches: int
    settings: dict[str, Any]

    @property
    def network_resolved(self) -> bool:
        return all(m.resolved for m in self.modules)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``module, rewind_metric, criticality, alpha, sigma, resolved``: one row
        per module, then ``module = "network"`` (criticality: the sum; resolved: every
        module's; other values NaN)."""
        rows = [
            (m.module, m.rewind_metric, m.criticality, m.alpha, m.sigma, m.resolved)
            for m in self.modules
        ]
        nan = float("nan")
        rows.append((NETWORK, nan, self.network_criticality, nan, nan, self.network_resolved))
        columns = ["module", "rewind_metric", "criticality", "alpha", "sigma", "resolved"]
        return pd.DataFrame(rows, columns=columns)


def rewind_module(
    model_final: nn.Module,
    model_init: StateLike,
    module: str | Sequence[str],
    *,
    modules: UnitsLike | None = None,
) -> nn.Module:
    """A copy of ``model_final`` whose ``module`` (parameters and buffers) is ``model_init``'s.

    ``module`` is a unit of ``modules`` (a list of names, ``{unit: [prefixes]}`` or a
    ``ModuleMap``; default: the model's module map, so a ViT's ``stem`` is its
    ``cls_token``, ``pos_embed`` and ``patch_embed``) or, when it names none, any module
    of the network; a list of such names rewinds them all at once (every unit of a
    stage). The inputs are not modified.
    """
    state_final = model_final.state_dict()
    state_init = as_state_dict(model_init, "initial model")
    if modules is None:
        modules = default_modules(model_final)
    names = [module] if isinstance(module, str) else list(module)
    units = dict(unit_of(name, modules) for name in names)
    check_modules(state_final, units)
    members = tuple(member for prefixes in units.values() for member in prefixes)
    check_same_layout(
        {k: v for k, v in state_final.items() if under_any(k, members)},
        {k: v for k, v in state_init.items() if under_any(k, members)},
    )
    rewound = copy.deepcopy(model_final)
    merged = dict(state_final)
    merged.update({key: state_init[key] for key in state_final if under_any(key, members)})
    rewound.load_state_dict(merged)
    return rewound


@dataclass(frozen=True)
class _Point:
    index: int  # the reference's order: sigma-major, alpha-minor
    alpha: float
    sigma: float
    objective: float


def _grid(alphas: list[float], sigmas: list[float], squared: float) -> list[_Point]:
    points = []
    for i_sigma, sigma in enumerate(sigmas):
        for i_alpha, alpha in enumerate(alphas):
            objective = (alpha / sigma) ** 2 * squared
            points.append(_Point(i_sigma * len(alphas) + i_alpha, alpha, sigma, objective))
    return points


# The summed loss of one batch: (outputs, targets) -> a scalar tensor, every term >= 0.
LossSum = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def running_loss_sums(model: nn.Module, batches: Iterable, task: Task | LossSum) -> Iterator[float]:
    """After each batch, the running float64 sum of the example losses so far.

    ``task``: the task (its loss) or a :data:`LossSum`. L = (last sum) / n. Every batch
    adds a sum of non-negative losses, so the running sum never decreases: a partial
    sum is a lower bound of the total.
    """
    total = 0.0
    for inputs, targets in batches:
        outputs = model(inputs)
        if callable(task):
            total += float(task(outputs, targets).double())
        else:
            total += float(task_loss(outputs, targets, task, "sum").double())
        yield total


def _mean_loss(model: nn.Module, batches: PreparedBatches, task: Task | LossSum) -> float:
    with torch.inference_mode():
        sums = list(running_loss_sums(model, batches, task))
    return sums[-1] / batches.n_examples


class _Search:
    """One module's search over the grid; counts the passes and batches it evaluates."""

    def __init__(self, working, slot, init, final, batches, task, n_noise, epsilon, seed):
        self.working, self.slot, self.init, self.final = working, slot, init, final
        self.batches, self.task, self.n_noise = batches, task, n_noise
        self.epsilon, self.seed = epsilon, seed
        self.device = analysis_device(None, working)
        self.n_passes = 0
        self.n_batches = 0
        # alpha -> L at theta(alpha) without noise, for draws whose noise vanished in rounding
        self.noiseless_losses: dict[float, float] = {}

    @torch.inference_mode()
    def feasible(self, point: _Point, early_stop: bool) -> tuple[bool, float]:
        """(mean over draws of L <= eps, that mean; partial if stopped early).

        With ``early_stop`` (the pruned search) a pass stops as soon as the running sum
        proves the point infeasible (every term added later is >= 0), and a draw whose
        noise vanished reuses the noiseless loss at its alpha (see the module docstring).
        """
        values = lerp_values(self.init, self.final, point.alpha)
        n_examples, n_noise, epsilon = self.batches.n_examples, self.n_noise, self.epsilon
        draws_sum = 0.0  # sum over finished draws of their mean loss
        for sample in range(n_noise):
            generator = noise_generator(
                self.device, noise_seed(self.seed, self.slot.module, point.index, sample)
            )
            perturbed = self.slot.set(values, point.sigma, generator)
            reusable = early_stop and not perturbed
            if reusable and point.alpha in self.noiseless_losses:
                # The very network already evaluated: its loss, not another pass.
                mean_loss = self.noiseless_losses[point.alpha]
                if (draws_sum + mean_loss) / n_noise > epsilon:
                    return False, (draws_sum + mean_loss) / (sample + 1)
                draws_sum += mean_loss
                continue
            self.n_passes += 1
            loss_sum = 0.0
            for loss_sum in running_loss_sums(self.working, self.batches, self.task):
                self.n_batches += 1
                if early_stop and (draws_sum + loss_sum / n_examples) / n_noise > epsilon:
                    return False, (draws_sum + loss_sum / n_examples) / (sample + 1)
            if reusable:
                self.noiseless_losses[point.alpha] = loss_sum / n_examples
            draws_sum += loss_sum / n_examples
        return draws_sum / n_noise <= epsilon, draws_sum / n_noise

    def run(self, points: list[_Point], search: str) -> tuple[_Point | None, float]:
        ordered = sorted(points, key=lambda p: (p.objective, p.index))
        best, best_loss = None, float("nan")
        if search == "pruned":
            for point in ordered:
                ok, loss = self.feasible(point, early_stop=True)
                if ok:
                    best, best_loss = point, loss
                    break
        else:
            outcomes = {p.index: self.feasible(p, early_stop=False) for p in points}
            for point in ordered:
                if outcomes[point.index][0]:
                    best, best_loss = point, outcomes[point.index][1]
                    break
        self.slot.restore()
        return best, best_loss


def module_criticality(
    model_final: nn.Module,
    model_init: StateLike,
    loader: Iterable,
    task: Task,
    *,
    modules: UnitsLike | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    sigmas: Sequence[float] | None = None,
    n_noise: int = 10,
    definition: str = EPSILON,
    epsilon: float = DEFAULT_EPSILON,
    tolerance: float = 1.01,
    seed: int = 0,
    metric_loader: Iterable | None = None,
    search: str = "pruned",
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
    loss_sum: LossSum | None = None,
    rewind_metrics: Mapping[str, float] | None = None,
) -> CriticalityResult:
    """Criticality of each module and the metric with that module rewound to ``model_init``.

    ``loader`` holds the data of the loss L (the paper: training data);
    ``metric_loader`` (default: ``loader``) the data of ``rewind_metric``, the metric
    with the module alone set to its initial value, no noise (the paper's figure).
    One :class:`ModuleCriticality` per unit of ``modules`` (a list of module names,
    ``{unit: [prefixes]}`` or a ``ModuleMap``; default: the units of the model's module
    map -- ``conv1``, each residual block, the head for ResNets; a ViT's stem, each
    block, its head); a unit's members are rewound and perturbed together, its noise
    seeded by the unit's name. The network's criticality is their sum (NaN under
    ``epsilon`` unless every module is resolved).

    ``definition="epsilon"`` (the default): ``eps = epsilon`` (an absolute training loss)
    and ``sigmas`` are multiples of each module's RMS (default
    :func:`~transferlens.analysis.criticality_definition.relative_sigma_grid` ``()``);
    ``definition="reference"``: ``eps = tolerance * L(thetaF)`` and ``sigmas`` absolute
    (default :func:`criticality_grid` ``()``'s). ``loss_sum`` replaces the task's loss
    in L (a :data:`LossSum`, e.g. a squared error; the metric stays the task's).
    ``rewind_metrics``: each unit's ``rewind_metric`` when already evaluated on the metric
    data (:func:`~transferlens.analysis.rewinding.rewinding`): not evaluated again. ``progress``, when given, is called with
    ``module 3/6 layer2`` as each module's search begins (it changes nothing computed).
    """
    check_task(task)
    if not isinstance(model_final, nn.Module):
        raise UserInputError("model_final must be an nn.Module")
    if search not in SEARCHES:
        raise UserInputError(f"search must be one of {', '.join(SEARCHES)} (got {search!r})")
    check_count(n_noise, "n_noise", minimum=1)
    relative = check_definition(definition) == EPSILON
    if sigmas is None:
        sigmas = relative_sigma_grid() if relative else DEFAULT_SIGMAS
    alphas = check_grid(alphas, "alphas", positive=False)
    sigmas = check_grid(sigmas, "sigmas", positive=True)
    tolerance = check_grid([tolerance], "tolerance", positive=True)[0]
    epsilon = check_grid([epsilon], "epsilon", positive=True)[0]
    noise_seed(seed, "", 0, 0)  # validates the seed before any work

    device = analysis_device(device, model_final)
    working = copy.deepcopy(model_final).to(device).eval()
    state_final = {k: v.detach().clone() for k, v in working.state_dict().items()}
    state_init = {k: v.detach().to(device) for k, v in as_state_dict(model_init).items()}
    check_same_layout(state_final, state_init)
    units = check_modules(state_final, default_modules(model_final) if modules is None else modules)

    batches = prepare_batches(loader, device)
    metric_batches = batches if metric_loader is None else prepare_batches(metric_loader, device)
    loss_of = task if loss_sum is None else loss_sum
    reference_loss = _mean_loss(working, batches, loss_of)  # the search's own summation
    if not relative:
        epsilon = tolerance * reference_loss
    final_metric = evaluate_batches(working, metric_batches, task).metric
    n_passes, n_batches = 1, len(batches)

    settings = {"definition": definition, "modules": list(units), "alphas": alphas,
                "sigmas": sigmas, "n_noise": n_noise, "tolerance": tolerance, "seed": seed,
                "search": search}  # fmt: skip
    results = []
    for number, (module, members) in enumerate(units.items(), 1):
        if progress is not None:
            progress(f"module {number}/{len(units)} {module}")
        slot = ModuleSlot(working, module, members)
        init, final = slot.values_from(state_init), slot.values_from(state_final)
        squared = squared_distance(final, init, slot.parameter_names)
        if rewind_metrics is not None and module in rewind_metrics:
            rewind_metric = float(rewind_metrics[module])
        else:
            slot.set(init)
            rewind_metric = evaluate_batches(working, metric_batches, task).metric
            slot.restore()
        # Under epsilon the grid is in units of the module's own scale (1 for a module
        # whose final parameters are all zero, which has no scale).
        scale = (module_rms(final, slot.parameter_names) or 1.0) if relative else 1.0
        module_sigmas = [scale * sigma for sigma in sigmas]
        searcher = _Search(working, slot, init, final, batches, loss_of, n_noise, epsilon, seed)
        best, loss = searcher.run(_grid(alphas, module_sigmas, squared), search)
        n_passes += searcher.n_passes
        n_batches += searcher.n_batches
        nan = float("nan")
        if best is None:
            found = (nan if relative else float("inf"), nan, nan)
        else:
            found = (best.objective, best.alpha, best.sigma)
        ok = resolved(found[1], found[2], module_sigmas)
        if relative and not ok:
            found = (nan, *found[1:])  # "not resolved by the grid", not a number
        results.append(
            ModuleCriticality(module, rewind_metric, *found, loss_at_minimum=loss, resolved=ok)
        )
    full_passes = 1 + len(units) * len(alphas) * len(sigmas) * n_noise
    return CriticalityResult(
        modules=tuple(results),
        network_criticality=float(sum(result.criticality for result in results)),
        reference_loss=reference_loss,
        epsilon=epsilon,
        final_metric=final_metric,
        n_forward_passes=n_passes,
        n_forward_batches=n_batches,
        n_full_grid_passes=full_passes,
        n_full_grid_batches=full_passes * len(batches),
        settings=settings,
    )
