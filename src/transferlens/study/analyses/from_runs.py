"""Study adapters of the two analyses read from runs.csv alone (no model is loaded)."""

from __future__ import annotations

import pandas as pd

from transferlens.study.analyses.context import Progress, StudyContext
from transferlens.study.analyses.settings import PretrainCheckpointsSettings, ReuseSettings


def analyse_reuse(
    context: StudyContext, settings: ReuseSettings, progress: Progress | None = None
) -> dict[str, pd.DataFrame]:
    """Feature reuse from the block-shuffle sweep's runs (the paper's "noaug" configs).

    :func:`~transferlens.analysis.feature_reuse` picks the runs from runs.csv's groups:
    only the sweep's count, so that the unshuffled reference is trained exactly like
    the shuffled ones; a study without a sweep compares its main runs.
    """
    from transferlens.analysis import feature_reuse

    return {"reuse": feature_reuse(context.runs_frame).to_frame()}


def analyse_pretrain_checkpoints(
    context: StudyContext,
    settings: PretrainCheckpointsSettings,
    progress: Progress | None = None,
) -> dict[str, pd.DataFrame]:
    """Final metric and speed of P-T by the pre-training epoch it started from."""
    from transferlens.analysis import pretrain_checkpoints

    return {"pretrain_checkpoints": pretrain_checkpoints(context.runs_frame).to_frame()}
