"""Study adapter of the mistakes analysis: agreement tables and the gallery's examples."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from torch.utils.data import DataLoader

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


def analyse_mistakes(
    context: StudyContext,
    settings: MistakesSettings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """``mistakes`` (per pair, over seeds) and ``mistakes_examples`` (the first seed pair's
    test indices per cell, with label and both predictions), single-label targets only.
    ``progress`` hears ``real: target 1/3, 3 pairs``."""
    from transferlens.analysis import mistakes

    tables, examples = [], []
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
        tables.append(result.to_frame().assign(target=target))
        predictions = {key: _predictions(model, loader) for key, model in models.items()}
        for name, combos in pairs.items():
            first, second = (member_key(member) for member in combos[0])
            for cell in CELLS:
                chosen = result.indices(name, cell, first, second)[: settings.examples_per_cell]
                examples.extend(
                    _example(target, name, cell, int(index), result, predictions, first, second)
                    for index in chosen
                )
    return {"mistakes": concat(tables), "mistakes_examples": pd.DataFrame(examples)}


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
