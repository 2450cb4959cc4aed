"""Study adapter of the parameter distance: mean l2 per unit and per stage of the
study's module map over each pair's seeds."""

from __future__ import annotations

import pandas as pd

from transferlens.study.analyses.context import Progress, StudyContext, concat, model_pairs
from transferlens.study.analyses.settings import DistanceSettings


def analyse_distance(
    context: StudyContext, settings: DistanceSettings, progress: Progress | None = None
) -> dict[str, pd.DataFrame]:
    """``distance`` (target, pair, module, l2: the row ``all``, then each unit) and
    ``distance_stages`` (target, pair, stage, l2), each the mean over the pair's seeds;
    a unit or stage left out (the head between P and P-T) is NaN."""
    from transferlens.analysis import parameter_distance

    tables, stage_tables = [], []
    for target, entry in context.targets.items():
        names = ("PT-PT", "RIT-RIT", "PT-P", "RIT-P") if context.source else ("PT-PT", "RIT-RIT")
        for name, combos in model_pairs(entry, names).items():
            results = [
                parameter_distance(
                    context.member_model(first),
                    context.member_model(second),
                    modules=context.module_map,
                )
                for first, second in combos
            ]
            units = pd.concat([result.to_frame() for result in results])
            stages = pd.concat([result.stages_frame() for result in results])
            mean = units.groupby("module", sort=False)["l2"].mean().reset_index()
            tables.append(mean.assign(target=target, pair=name))
            stage_mean = stages.groupby("stage", sort=False)["l2"].mean().reset_index()
            stage_tables.append(stage_mean.assign(target=target, pair=name))
    return {"distance": concat(tables), "distance_stages": concat(stage_tables)}
