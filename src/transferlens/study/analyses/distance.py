"""Study adapter of the parameter distance: l2 per unit and per stage of the study's
module map, for every seed pair, and the mean over each pair's seeds with its interval
across seed pairs."""

from __future__ import annotations

import math

import pandas as pd

from transferlens.results import SOURCE
from transferlens.study.analyses.context import Progress, StudyContext, concat, model_pairs
from transferlens.study.analyses.settings import DistanceSettings


def _seed(member: object) -> float:
    """A pair member's seed; NaN for the source model P (pair_summary's convention)."""
    return math.nan if member == SOURCE else float(member.meta.seed)  # type: ignore[attr-defined]


def _with_seed_interval(mean: pd.DataFrame, pairs: pd.DataFrame, key: str) -> pd.DataFrame:
    """``mean`` (target, pair, ``key``, l2) with ``l2_seeds_low``, ``l2_seeds_high`` and
    ``n_pairs`` of :func:`~transferlens.analysis.seed_stats.pair_summary` after its
    columns; ``l2`` itself stays the mean as computed (pandas' mean over the seed pairs)."""
    from transferlens.analysis.seed_stats import pair_summary

    by = ["target", "pair", key]
    spread = pair_summary(pairs, "l2", by=by).drop(columns="l2")
    return mean.merge(spread, on=by, how="left", sort=False)


def analyse_distance(
    context: StudyContext, settings: DistanceSettings, progress: Progress | None = None
) -> dict[str, pd.DataFrame]:
    """``distance`` (target, pair, module, l2: the row ``all``, then each unit) and
    ``distance_stages`` (target, pair, stage, l2), each the mean over the pair's seeds,
    then ``l2_seeds_low``, ``l2_seeds_high`` (the t-interval across seed pairs) and
    ``n_pairs``; ``distance_pairs`` (target, pair, first_seed, second_seed, module, l2)
    holds every seed pair (NaN seed: the source model P). A unit or stage left out (the
    head between P and P-T) is NaN."""
    from transferlens.analysis import parameter_distance

    tables, stage_tables, unit_pairs, stage_pairs = [], [], [], []
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
            seeds = {"target": target, "pair": name}
            for (first, second), result in zip(combos, results):
                seeds.update(first_seed=_seed(first), second_seed=_seed(second))
                unit_pairs.append(result.to_frame().assign(**seeds))
                stage_pairs.append(result.stages_frame().assign(**seeds))
            units = pd.concat([result.to_frame() for result in results])
            stages = pd.concat([result.stages_frame() for result in results])
            mean = units.groupby("module", sort=False)["l2"].mean().reset_index()
            tables.append(mean.assign(target=target, pair=name))
            stage_mean = stages.groupby("stage", sort=False)["l2"].mean().reset_index()
            stage_tables.append(stage_mean.assign(target=target, pair=name))
    distance, distance_stages = concat(tables), concat(stage_tables)
    pairs, stage_pair_frame = concat(unit_pairs), concat(stage_pairs)
    if not distance.empty:
        distance = _with_seed_interval(distance, pairs, "module")
    if not distance_stages.empty:
        distance_stages = _with_seed_interval(distance_stages, stage_pair_frame, "stage")
    if not pairs.empty:
        leading = ["target", "pair", "first_seed", "second_seed", "module", "l2"]
        # Integers, empty for the source model P.
        pairs = pairs[leading].astype({"first_seed": "Int64", "second_seed": "Int64"})
    return {"distance": distance, "distance_stages": distance_stages, "distance_pairs": pairs}
