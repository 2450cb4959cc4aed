"""Study adapter of module criticality: each unit of the study's module map in the first
seed's P-T and RI-T model (every seed with ``seeds: all``), rewinding each unit of every
seed's model (``rewinding``), and the rewinding paths of one unit (``path_module``, by
default the map's first: ``conv1`` for a ResNet) through the first seed's checkpoints."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from torch import nn

from transferlens.study.analyses.context import StudyContext, concat
from transferlens.study.analyses.settings import CriticalitySettings

REWIND_INTERVAL = ["rewind_metric_low", "rewind_metric_high"]
# Added by issue 16 after the table's earlier columns (existing columns keep their places).
CRITICALITY_INTERVAL = ["criticality_low", "criticality_high"]


def analyse_criticality(
    context: StudyContext,
    settings: CriticalitySettings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """``criticality``, ``rewinding`` and ``criticality_path``; ``progress`` hears ``real PT
    module 3/6 conv1`` and ``real PT conv1 path 1/2 direct (...)`` as each step begins.

    criticality.csv: ``target, init, module, rewind_metric, criticality, alpha, sigma,
    resolved, rewind_metric_low, rewind_metric_high, epsilon, seed, criticality_low,
    criticality_high`` (``epsilon``: the loss bound used; ``criticality_low/high``: the
    bootstrap interval over the training examples searched, ``n_bootstrap`` resamples);
    criticality_path.csv adds ``loss_low, loss_high, metric_low, metric_high`` (over the
    test examples); rewinding.csv: ``target, init, seed, module, rewind_metric,
    rewind_metric_low, rewind_metric_high`` for every complete main run.
    """
    from transferlens.analysis import path_grid
    from transferlens.analysis.rewinding import rewinding
    from transferlens.study.progress import prefixed
    from transferlens.train import available_epochs

    tables, rewinds, paths = [], [], []
    for target, entry in context.targets.items():
        train_loader = context.train_eval_loader(target, settings.max_examples)
        test_loader = context.test_loader(target)
        task = context.task(target)
        for init, runs in (("PT", entry.pt), ("RIT", entry.rit)):
            if not runs:
                continue
            first = min(runs)  # the paper shows one model per init: the first seed's
            for seed in sorted(runs):
                run = runs[seed]
                final, start = context.model(run), context.model(run, 0)
                rewound = rewinding(
                    final, start, test_loader, task, modules=context.module_map,
                    n_bootstrap=settings.n_bootstrap,
                )  # fmt: skip
                rewinds.append(rewound.assign(target=target, init=init, seed=seed))
                if seed != first and settings.seeds == "first":
                    continue
                label = f"{target} {init} " if seed == first else f"{target} {init} seed {seed} "
                step = prefixed(progress, label)
                check_path_module(final, settings.path_module, context)
                measured = dict(zip(rewound["module"], rewound["rewind_metric"]))
                table, epsilon = _criticality(final, start, train_loader, test_loader, task,
                                              settings, context, step, measured)  # fmt: skip
                table = table.join(rewound.set_index("module")[REWIND_INTERVAL], on="module")
                table = table.assign(epsilon=epsilon, target=target, init=init, seed=seed)
                tables.append(table[[c for c in table.columns if c not in CRITICALITY_INTERVAL]
                                    + CRITICALITY_INTERVAL])  # fmt: skip
                if seed != first:
                    continue
                epochs = available_epochs(context.store.run_dir(run.run_id))
                checkpoints = [context.model(run, epoch).state_dict() for epoch in epochs]
                grid = path_grid(
                    final, checkpoints, test_loader, task, module=settings.path_module,
                    modules=context.module_map, n_points=settings.path_points,
                    sigmas=list(settings.path_sigmas), progress=step,
                    n_bootstrap=settings.n_bootstrap,
                ).to_frame()  # fmt: skip
                paths.append(grid.assign(target=target, init=init))
    rewinding_table = concat(rewinds)
    if not rewinding_table.empty:
        leading = ["target", "init", "seed", "module"]
        rewinding_table = rewinding_table[
            leading + [c for c in rewinding_table.columns if c not in leading]
        ]
    return {
        "criticality": concat(tables),
        "rewinding": rewinding_table,
        "criticality_path": concat(paths),
    }


def _criticality(final, start, train_loader, test_loader, task, settings, context, step, rewound):
    """One model's criticality table (``to_frame``) and the loss bound it used; ``rewound``:
    each unit's rewound test metric, already evaluated by ``rewinding``."""
    from transferlens.analysis import criticality_grid, module_criticality
    from transferlens.analysis.criticality_definition import relative_sigma_grid

    alphas, sigmas = criticality_grid(settings.alphas, settings.sigmas)
    if settings.definition == "epsilon":
        sigmas = relative_sigma_grid(settings.sigmas, settings.sigma_span)
    result = module_criticality(
        final, start, train_loader, task, alphas=alphas, sigmas=sigmas,
        n_noise=settings.n_noise, definition=settings.definition, epsilon=settings.epsilon,
        tolerance=settings.tolerance, metric_loader=test_loader, modules=context.module_map,
        progress=step, rewind_metrics=rewound, n_bootstrap=settings.n_bootstrap,
    )  # fmt: skip
    return result.to_frame(), result.epsilon


def check_path_module(model: nn.Module, path_module: str | None, context: StudyContext) -> None:
    """Refuse a ``path_module`` the model does not have before any search begins (one
    line naming the setting), rather than after the criticality of every unit."""
    from transferlens.analysis.statedict import check_modules, unit_of
    from transferlens.errors import UserInputError

    if path_module is None:
        return
    try:
        check_modules(model.state_dict(), dict([unit_of(path_module, context.module_map)]))
    except UserInputError as error:
        raise UserInputError(f"analyses.criticality.path_module: {error}") from None
