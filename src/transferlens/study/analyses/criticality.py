"""Study adapter of module criticality: each unit of the study's module map in the first
seed's P-T and RI-T model, and the rewinding paths of one unit (``path_module``, by
default the map's first: ``conv1`` for a ResNet) through the saved checkpoints."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from torch import nn

from transferlens.study.analyses.context import StudyContext, concat
from transferlens.study.analyses.settings import CriticalitySettings


def analyse_criticality(
    context: StudyContext,
    settings: CriticalitySettings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """``criticality`` and ``criticality_path``; ``progress`` hears ``real PT module 3/6
    conv1`` and ``real PT conv1 path 1/2 direct (...)`` as each step begins."""
    from transferlens.analysis import criticality_grid, module_criticality, path_grid
    from transferlens.study.progress import prefixed
    from transferlens.train import available_epochs

    tables, paths = [], []
    alphas, sigmas = criticality_grid(settings.alphas, settings.sigmas)
    for target, entry in context.targets.items():
        train_loader = context.train_eval_loader(target, settings.max_examples)
        test_loader = context.test_loader(target)
        task = context.task(target)
        for init, runs in (("PT", entry.pt), ("RIT", entry.rit)):
            if not runs:
                continue
            run = runs[min(runs)]  # the first seed, as the paper shows one model per init
            step = prefixed(progress, f"{target} {init} ")
            final, start = context.model(run), context.model(run, 0)
            check_path_module(final, settings.path_module, context)
            table = module_criticality(
                final,
                start,
                train_loader,
                task,
                alphas=alphas,
                sigmas=sigmas,
                n_noise=settings.n_noise,
                tolerance=settings.tolerance,
                metric_loader=test_loader,
                modules=context.module_map,
                progress=step,
            ).to_frame()
            tables.append(table.assign(target=target, init=init))
            epochs = available_epochs(context.store.run_dir(run.run_id))
            checkpoints = [context.model(run, epoch).state_dict() for epoch in epochs]
            grid = path_grid(
                final,
                checkpoints,
                test_loader,
                task,
                module=settings.path_module,
                modules=context.module_map,
                n_points=settings.path_points,
                sigmas=list(settings.path_sigmas),
                progress=step,
            ).to_frame()
            paths.append(grid.assign(target=target, init=init))
    return {"criticality": concat(tables), "criticality_path": concat(paths)}


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
