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

Search without waste, yet the same result as the full grid
(:mod:`~transferlens.analysis.criticality_search`):

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

Interval over the evaluation set (``n_bootstrap`` > 0,
:mod:`~transferlens.analysis.criticality_interval`): the per-example losses of each
evaluated point are kept, and each bootstrap resample of the examples gets its own
minimiser and criticality from them -- no forward pass is repeated, the noise draws are
fixed, the point estimate is unchanged. Points are then evaluated in objective order
until one is feasible in every resample, cut short only once infeasible for all still
open, so the interval is exact (the same as the full grid's).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from transferlens.analysis.criticality_interval import (
    IntervalSearch,
    interval_with_inf,
    resample_counts,
    resample_criticality,
)
from transferlens.analysis.criticality_search import (
    SEARCHES,
    LossSum,
    Search,
    _grid,
    _mean_loss,
    running_loss_sums,
)
from transferlens.analysis.evalcache import analysis_device, evaluate_batches, prepare_batches
from transferlens.analysis.perturb import ModuleSlot, noise_seed, squared_distance
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
from transferlens.analysis.stats import check_n_bootstrap
from transferlens.errors import UserInputError
from transferlens.metrics import Task

NETWORK = "network"
# Re-exported: importable from here as before the search moved to criticality_search.
__all__ = [
    "NETWORK",
    "SEARCHES",
    "CriticalityResult",
    "LossSum",
    "ModuleCriticality",
    "criticality_grid",
    "module_criticality",
    "rewind_module",
    "running_loss_sums",
]


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
    ``criticality_low``, ``criticality_high``: the bootstrap interval over the evaluation
    set (:mod:`~transferlens.analysis.criticality_interval`; ``inf`` where resamples have
    no resolved minimiser on the small-sigma side; NaN without an interval).
    """

    module: str
    rewind_metric: float
    criticality: float
    alpha: float
    sigma: float
    loss_at_minimum: float
    resolved: bool = True
    criticality_low: float = float("nan")
    criticality_high: float = float("nan")


@dataclass(frozen=True)
class CriticalityResult:
    """Every module's criticality and the network's (their sum), with what the search cost.

    ``reference_loss``: L(thetaF); ``epsilon``: the loss bound; ``final_metric``: the
    final network's metric on the metric data. ``n_forward_passes`` /
    ``n_forward_batches``: passes over the data begun and batches evaluated (the
    reference evaluation included); ``n_full_grid_*``: what the full grid costs.
    ``settings``: ``definition``, ``modules``, ``alphas``, ``sigmas`` (relative to each
    module's RMS under ``epsilon``), ``n_noise``, ``tolerance``, ``seed``, ``search``,
    ``n_bootstrap``, ``confidence``. ``network_low``, ``network_high``: the interval of
    the network's criticality from the same resamples (the sum of the modules' resampled
    values).
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
    network_low: float = float("nan")
    network_high: float = float("nan")

    @property
    def network_resolved(self) -> bool:
        return all(m.resolved for m in self.modules)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``module, rewind_metric, criticality, alpha, sigma, resolved,
        criticality_low, criticality_high``: one row per module, then ``module =
        "network"`` (criticality: the sum; resolved: every module's; its interval from the
        summed resamples; other values NaN)."""
        rows = [
            (m.module, m.rewind_metric, m.criticality, m.alpha, m.sigma, m.resolved,
             m.criticality_low, m.criticality_high)
            for m in self.modules
        ]  # fmt: skip
        nan = float("nan")
        rows.append((NETWORK, nan, self.network_criticality, nan, nan, self.network_resolved,
                     self.network_low, self.network_high))  # fmt: skip
        columns = ["module", "rewind_metric", "criticality", "alpha", "sigma", "resolved",
                   "criticality_low", "criticality_high"]  # fmt: skip
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
    n_bootstrap: int = 0,
    confidence: float = 0.95,
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
    data (:func:`~transferlens.analysis.rewinding.rewinding`): not evaluated again.
    ``progress``, when given, is called with ``module 3/6 layer2`` as each module's search
    begins (it changes nothing computed).

    ``n_bootstrap`` > 0: each module's ``criticality_low/high`` (and the network's), the
    ``confidence`` percentile interval over ``n_bootstrap`` resamples of the examples of
    ``loader`` drawn from ``seed`` (:mod:`~transferlens.analysis.criticality_interval`:
    from per-example losses kept during the search, no pass repeated; the point
    estimate is unchanged, bit for bit). With a ``loss_sum`` there are no per-example
    terms: NaN. ``n_bootstrap = 0`` (the default): the search as before, NaN bounds.
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
    n_bootstrap = check_n_bootstrap(n_bootstrap)
    if loss_sum is not None:
        n_bootstrap = 0  # a LossSum gives no per-example terms: no interval (NaN bounds)
    if not 0.0 < float(confidence) < 1.0:
        raise UserInputError(f"confidence must be between 0 and 1 (got {confidence!r})")

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
                "search": search, "n_bootstrap": n_bootstrap, "confidence": confidence}  # fmt: skip
    # The same resamples for every module (and every model of the same data and seed).
    counts = resample_counts(batches.n_examples, n_bootstrap, seed) if n_bootstrap else None
    network_resamples = np.zeros(n_bootstrap)
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
        arguments = (working, slot, init, final, batches, loss_of, n_noise, epsilon, seed)
        points = _grid(alphas, module_sigmas, squared)
        interval = (float("nan"), float("nan"))
        if counts is None:
            searcher = Search(*arguments)
            best, loss = searcher.run(points, search)
        else:
            searcher = IntervalSearch(*arguments, counts=counts)
            best, loss, chosen = searcher.run_with_resamples(points, search)
            resampled = resample_criticality(chosen, module_sigmas, relative)
            network_resamples += resampled
            interval = interval_with_inf(resampled, confidence)
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
            ModuleCriticality(module, rewind_metric, *found, loss_at_minimum=loss, resolved=ok,
                              criticality_low=interval[0], criticality_high=interval[1])
        )  # fmt: skip
    network_interval = (
        interval_with_inf(network_resamples, confidence) if counts is not None
        else (float("nan"), float("nan"))
    )  # fmt: skip
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
        network_low=network_interval[0],
        network_high=network_interval[1],
    )
