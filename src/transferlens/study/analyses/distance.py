"""Study adapter of the parameter distance: mean l2 per module over each pair's seeds."""

from __future__ import annotations

import pandas as pd

from transferlens.study.analyses.context import Progress, StudyContext, concat, model_pairs
from transferlens.study.analyses.settings import DistanceSettings


def analyse_distance(
    context: StudyContext, settings: DistanceSettings, progress: Progress | None = None
) -> dict[str, pd.DataFrame]:
    from transferlens.analysis import parameter_distance

    tables = []
    for target, entry in context.targets.items():
        names = ("PT-PT", "RIT-RIT", "PT-P", "RIT-P") if context.source else ("PT-PT", "RIT-RIT")
        for name, combos in model_pairs(entry, names).items():
            frames = [
                parameter_distance(
                    context.member_model(first), context.member_model(second)
                ).to_frame()
                for first, second in combos
            ]
            mean = pd.concat(frames).groupby("module", sort=False)["l2"].mean().reset_index()
            tables.append(mean.assign(target=target, pair=name))
    return {"distance": concat(tables)}
