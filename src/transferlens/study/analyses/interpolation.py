"""Study adapter of linear interpolation: one curve per pair (its first two seeds) and
its barriers."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from transferlens.study.analyses.context import StudyContext, concat, model_pairs
from transferlens.study.analyses.settings import InterpolationSettings


def analyse_interpolation(
    context: StudyContext,
    settings: InterpolationSettings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """``interpolation`` and ``barriers``; ``progress`` hears ``real: pair 2/3 PT-RIT``."""
    from transferlens.analysis import barrier, interpolation_curve, lambda_grid

    curves, barriers = [], []
    for target, entry in context.targets.items():
        loader = context.test_loader(target, settings.max_examples)
        train_loader = context.train_eval_loader(target)
        pairs = model_pairs(entry, ("PT-PT", "PT-RIT", "RIT-RIT"))
        for number, (name, combos) in enumerate(pairs.items(), 1):
            first, second = combos[0]  # the first two seeds: one curve per pair, as in the paper
            if progress is not None:
                progress(f"{target}: pair {number}/{len(pairs)} {name}")
            result = interpolation_curve(
                context.model(first),
                context.model(second),
                loader,
                context.task(target),
                lams=lambda_grid(settings.points),
                train_loader=train_loader,
            )
            loss_barrier, metric_barrier = barrier(result)
            curves.append(result.to_frame().assign(target=target, pair=name))
            barriers.append(
                {
                    "target": target,
                    "pair": name,
                    "loss_barrier": loss_barrier,
                    "metric_barrier": metric_barrier,
                }
            )
    return {"interpolation": concat(curves), "barriers": pd.DataFrame(barriers)}
