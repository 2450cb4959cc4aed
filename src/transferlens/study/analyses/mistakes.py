"""Study adapter of the mistakes analysis: agreement tables and the gallery's examples.

``mistakes`` has one row per target and pair kind: the means over seed pairs (counts,
kappa, kappa_max, kappa_ratio), the evaluation-set intervals of kappa and kappa_ratio,
then the intervals across seed pairs (``*_seeds_low/high``,
:func:`~transferlens.analysis.seed_stats.pair_summary`) and ``n_pairs``.
``mistakes_pairs`` has one row per seed pair.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from torch.utils.data import DataLoader

from transferlens.analysis.model_mistakes import CELLS as ALL_CELLS
from transferlens.analysis.seed_stats import pair_summary
from transferlens.results import SOURCE
from transferlens.study.analyses.context import (
    StudyContext,
    concat,
    keyed_models,
    member_key,
    model_pairs,
    named_pairs,
)
from transferlens.study.analyses.settings import MistakesSettings

CELLS = ("only_first_wrong", "only_second_wrong", "both_wrong")
PAIR_COLUMNS = (
    "target", "pair", "first_seed", "second_seed", "n", *ALL_CELLS,
    "accuracy_first", "accuracy_second", "kappa", "kappa_low", "kappa_high",
    "kappa_max", "kappa_ratio", "kappa_ratio_low", "kappa_ratio_high",
)  # fmt: skip
SEED_STATISTICS = ("kappa", "kappa_ratio")


def analyse_mistakes(
    context: StudyContext,
    settings: MistakesSettings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """``mistakes`` (per pair, over seeds), ``mistakes_pairs`` (per seed pair) and
    ``mistakes_examples`` (the first seed pair's test indices per cell, with label and
    both predictions), single-label targets only. ``progress`` hears ``real: target
    1/3, 3 pairs``."""
    from transferlens.analysis import mistakes

    tables, pair_tables, examples = [], [], []
    for number, (target, entry) in enumerate(context.targets.items(), 1):
        if context.task(target) != "multiclass":
            continue  # mistakes are defined on top-1 correctness
        pairs = model_pairs(entry, ("PT-PT", "PT-RIT", "RIT-RIT"))
        if not pairs:
            continue
        if progress is not None:
            progress(f"{target}: target {number}/{len(context.targets)}, {len(pairs)} pairs")
        models = keyed_models(context, pairs)
        loader = context.test_loader(target)
        result = mistakes(
            models, named_pairs(pairs), loader=loader, n_bootstrap=settings.n_bootstrap
        )
        per_pair = _pairs_frame(target, result.to_frame(combine=False), pairs)
        pair_tables.append(per_pair)
        tables.append(_with_seed_intervals(result.to_frame().assign(target=target), per_pair))
        predictions = {key: _predictions(model, loader) for key, model in models.items()}
        for name, combos in pairs.items():
            first, second = (member_key(member) for member in combos[0])
            for cell in CELLS:
                chosen = result.indices(name, cell, first, second)[: settings.examples_per_cell]
                examples.extend(
                    _example(target, name, cell, int(index), result, predictions, first, second)
                    for index in chosen
                )
    return {
        "mistakes": concat(tables),
        "mistakes_pairs": concat(pair_tables),
        "mistakes_examples": pd.DataFrame(examples),
    }


def _seed(member: Any) -> float:
    """A pair member's seed (NaN for the source model P, which has no seed of its own)."""
    return np.nan if member == SOURCE else float(member.meta.seed)


def _pairs_frame(target: str, combinations: pd.DataFrame, pairs: dict[str, list]) -> pd.DataFrame:
    """One row per seed pair (:data:`PAIR_COLUMNS`) from the library's per-combination frame."""
    seeds = {
        member_key(member): _seed(member)
        for combos in pairs.values()
        for combo in combos
        for member in combo
    }
    frame = combinations.assign(
        target=target,
        first_seed=combinations["first"].map(seeds).astype("Int64"),
        second_seed=combinations["second"].map(seeds).astype("Int64"),
    )
    return frame[list(PAIR_COLUMNS)]


def _with_seed_intervals(table: pd.DataFrame, per_pair: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per pair kind, means over seed pairs) with the t-intervals
    across seed pairs of kappa and kappa_ratio, and ``n_pairs``, after its columns. The
    means stay the library's (the values the evaluation-set intervals belong to)."""
    summaries = [pair_summary(per_pair, value, by=["pair"]) for value in SEED_STATISTICS]
    spread = summaries[0][["pair", "kappa_seeds_low", "kappa_seeds_high"]]
    ratio = summaries[1][["pair", "kappa_ratio_seeds_low", "kappa_ratio_seeds_high", "n_pairs"]]
    added = spread.merge(ratio, on="pair", how="left").set_index("pair")
    for column in added.columns:
        table[column] = table["pair"].map(added[column])
    return table


def _example(
    target: str,
    pair: str,
    cell: str,
    index: int,
    result: Any,
    predictions: dict[str, np.ndarray],
    first: str,
    second: str,
) -> dict[str, Any]:
    return {
        "target": target,
        "pair": pair,
        "cell": cell,
        "index": index,
        "label": int(result.labels[index]),
        "pred_first": int(predictions[first][index]),
        "pred_second": int(predictions[second][index]),
    }


def _predictions(model: nn.Module, loader: DataLoader) -> np.ndarray:
    from transferlens.evaluation import predict

    logits, _ = predict(model, loader)
    return logits.argmax(dim=1).numpy()
