"""Study adapter of linear interpolation: one curve per pair (its first two seeds) and
its barriers."""

from __future__ import annotations

import pandas as pd

from transferlens.study.analyses.context import StudyContext, concat, model_pairs
from transferlens.study.analyses.settings import InterpolationSettings


def analyse_interpolation(
    context: StudyContext, settings: InterpolationSettings
) -> dict[str, pd.DataFrame]:
    from transferlens.analysis import barrier, interpolation_curve, lambda_grid

    curves, barriers = [], []
    for target, entry in context.targets.items():
        loader = context.test_loader(target, settings.max_examples)
        train_loader = context.train_eval_loader(target)
        for name, combos in model_pairs(entry, ("PT-PT", "PT-RIT", "RIT-RIT")).items():
            first, second = combos[0]  # the first two seeds: one curve per pair, as in the paper
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
