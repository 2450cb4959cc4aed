"""Every analysis a study can run, written once: name -> (settings model, study adapter).

The order of :data:`ANALYSES` is the order in which ``run_analyses`` runs them; it is
part of the results (the global RNG is seeded once, then the analyses run in turn), so
a new analysis goes at the end. Everything else that lists analysis names (the study
spec's ``analyses:`` section, the CLI) derives from this mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from transferlens.study.analyses.cka import analyse_cka
from transferlens.study.analyses.criticality import analyse_criticality
from transferlens.study.analyses.distance import analyse_distance
from transferlens.study.analyses.from_runs import analyse_pretrain_checkpoints, analyse_reuse
from transferlens.study.analyses.interpolation import analyse_interpolation
from transferlens.study.analyses.mistakes import analyse_mistakes
from transferlens.study.analyses.settings import (
    AnalysisSettings,
    CkaSettings,
    CriticalitySettings,
    DistanceSettings,
    InterpolationSettings,
    MistakesSettings,
    PretrainCheckpointsSettings,
    ReuseSettings,
)

# adapter(context, settings, progress=None) -> {table name: frame}
Adapter = Callable[..., dict[str, pd.DataFrame]]


@dataclass(frozen=True)
class Analysis:
    """One analysis of a study: its settings model and the adapter that writes its tables.

    ``adapter(context, settings)`` returns ``{table name: frame}`` (names of
    :data:`transferlens.results.TABLE_COLUMNS`).
    """

    settings: type[AnalysisSettings]
    adapter: Adapter
    title: str
    reads_runs_table: bool = False  # computed from runs.csv alone, no model is loaded
    # Tables every run of it writes (others depend on its settings): a folder written by
    # an earlier version that lacks one is recomputed, and `status` names it as missing.
    tables: tuple[str, ...] = ()


ANALYSES: dict[str, Analysis] = {
    "reuse": Analysis(
        ReuseSettings,
        analyse_reuse,
        "feature reuse table from runs.csv (analysis 1)",
        True,
        ("reuse",),
    ),
    "pretrain_checkpoints": Analysis(
        PretrainCheckpointsSettings,
        analyse_pretrain_checkpoints,
        "which pre-training checkpoint, from runs.csv (analysis 7)",
        True,
        ("pretrain_checkpoints",),
    ),
    "mistakes": Analysis(
        MistakesSettings,
        analyse_mistakes,
        "common and uncommon mistakes of pairs of models (analysis 2)",
        tables=("mistakes", "mistakes_pairs"),
    ),
    "cka": Analysis(
        CkaSettings,
        analyse_cka,
        "CKA between the same layers of pairs of models (analysis 3)",
        tables=("cka", "cka_pairs"),
    ),
    "distance": Analysis(
        DistanceSettings,
        analyse_distance,
        "l2 distance between two models, whole and per module (analysis 4)",
        tables=("distance", "distance_pairs"),
    ),
    "interpolation": Analysis(
        InterpolationSettings,
        analyse_interpolation,
        "loss and metric on the line between two models, and the barrier (5)",
        tables=("interpolation", "interpolation_pairs", "barriers", "barriers_pairs"),
    ),
    "criticality": Analysis(
        CriticalitySettings,
        analyse_criticality,
        "module criticality and rewinding of one run (analysis 6)",
        tables=("criticality", "rewinding"),
    ),
}
ANALYSIS_NAMES = tuple(ANALYSES)
