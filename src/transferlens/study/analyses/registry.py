"""Every analysis a study can run, written once: name -> (settings model, study adapter).

The order of :data:`ANALYSES` is the order in which ``run_analyses`` runs them; it is
part of the results (the global RNG is seeded once, then the analyses run in turn), so
a new analysis goes at the end. Everything else that lists analysis names (the study
spec's ``analyses:`` section, the CLI) derives from this mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from transferlens.study.analyses.cka import analyse_cka
from transferlens.study.analyses.context import StudyContext
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

Adapter = Callable[[StudyContext, Any], dict[str, pd.DataFrame]]


@dataclass(frozen=True)
class Analysis:
    """One analysis of a study: its settings model and the adapter that writes its tables.

    ``adapter(context, settings)`` returns ``{table name: frame}`` (names of
    :data:`transferlens.results.TABLE_COLUMNS`).
    """

    settings: type[AnalysisSettings]
    adapter: Adapter


ANALYSES: dict[str, Analysis] = {
    "reuse": Analysis(ReuseSettings, analyse_reuse),
    "pretrain_checkpoints": Analysis(PretrainCheckpointsSettings, analyse_pretrain_checkpoints),
    "mistakes": Analysis(MistakesSettings, analyse_mistakes),
    "cka": Analysis(CkaSettings, analyse_cka),
    "distance": Analysis(DistanceSettings, analyse_distance),
    "interpolation": Analysis(InterpolationSettings, analyse_interpolation),
    "criticality": Analysis(CriticalitySettings, analyse_criticality),
}
ANALYSIS_NAMES = tuple(ANALYSES)
