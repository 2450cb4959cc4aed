"""Study adapter of CKA: per-layer similarity of each pair, and the layer-by-layer matrix."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from transferlens.study.analyses.context import (
    StudyContext,
    concat,
    keyed_models,
    member_key,
    model_pairs,
    named_pairs,
)
from transferlens.study.analyses.settings import CkaSettings

MATRIX_PAIRS = ("PT-PT", "RIT-RIT", "PT-RIT")


def analyse_cka(
    context: StudyContext, settings: CkaSettings, progress: Callable[[str], None] | None = None
) -> dict[str, pd.DataFrame]:
    """``cka`` (mean over seed pairs, bootstrap interval) and ``cka_matrix`` (the first
    seed pair of each of :data:`MATRIX_PAIRS`, every layer against every layer).
    ``progress`` hears ``real: target 1/3, 4 pairs`` and ``real: matrix PT-PT``."""
    from transferlens.analysis import cka_many, cka_matrix

    tables, matrices = [], []
    for number, (target, entry) in enumerate(context.targets.items(), 1):
        names = ("PT-PT", "PT-RIT", "RIT-RIT")
        if context.source:
            names = ("PT-P", *names)
        pairs = model_pairs(entry, names)
        if not pairs:
            continue
        if progress is not None:
            progress(f"{target}: target {number}/{len(context.targets)}, {len(pairs)} pairs")
        models = keyed_models(context, pairs)
        loader = context.test_loader(target, settings.max_examples)
        result = cka_many(
            models,
            loader,
            pairs=named_pairs(pairs),
            layers=settings.layers,
            n_bootstrap=settings.n_bootstrap,
        )
        tables.append(result.to_frame().assign(target=target))
        if not settings.matrix:
            continue
        for name in MATRIX_PAIRS:
            if name not in pairs:
                continue
            first, second = pairs[name][0]
            if progress is not None:
                progress(f"{target}: matrix {name}")
            matrix = cka_matrix(
                models[member_key(first)],
                models[member_key(second)],
                loader,
                settings.layers,
                settings.layers,
                n_bootstrap=0,
            ).to_frame()
            matrices.append(matrix.drop(columns="pair").assign(target=target, pair=name))
    return {"cka": concat(tables), "cka_matrix": concat(matrices)}
