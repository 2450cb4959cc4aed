"""Study adapter of CKA: per-layer similarity of each pair, the layer-by-layer matrix, and
what was compared at each layer (``cka_layers``)."""

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
    """``cka`` (mean over seed pairs, bootstrap interval), ``cka_matrix`` (the first
    seed pair of each of :data:`MATRIX_PAIRS`, every layer against every layer) and
    ``cka_layers`` (per layer: its stage and depth in the module map, the per-example
    shape, the reduction and the number of features compared; from the first target).
    The layers are ``settings.layers``, else the ``cka_layers`` of the study's module
    map (:attr:`StudyContext.module_map`, computed once per study).
    ``progress`` hears ``real: target 1/3, 4 pairs`` and ``real: matrix PT-PT``."""
    from transferlens.analysis import cka_many, cka_matrix

    tables, matrices, layer_rows = [], [], []
    module_map = context.module_map  # None only while no main run is complete
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
            tokens=settings.tokens,
            module_map=module_map,
        )
        tables.append(result.to_frame().assign(target=target))
        if not layer_rows:
            layer_rows.append(result.layers_frame(module_map))
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
                list(result.layers_a),
                list(result.layers_a),
                n_bootstrap=0,
                tokens=settings.tokens,
                module_map=module_map,
            ).to_frame()
            matrices.append(matrix.drop(columns="pair").assign(target=target, pair=name))
    return {
        "cka": concat(tables),
        "cka_matrix": concat(matrices),
        "cka_layers": concat(layer_rows),
    }
