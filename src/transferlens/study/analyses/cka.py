"""Study adapter of CKA: per-layer similarity of each pair (per seed pair and as the mean
over seed pairs), the layer-by-layer matrix, and what was compared at each layer
(``cka_layers``)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from transferlens.analysis.seed_stats import pair_summary
from transferlens.results import SOURCE
from transferlens.study.analyses.context import (
    StudyContext,
    TargetModels,
    concat,
    keyed_models,
    member_key,
    model_pairs,
    named_pairs,
)
from transferlens.study.analyses.settings import CkaSettings

MATRIX_PAIRS = ("PT-PT", "RIT-RIT", "PT-RIT")
PAIRS_COLUMNS = (
    "target", "pair", "first_seed", "second_seed", "layer", "cka", "cka_low", "cka_high", "cka_p",
)  # fmt: skip
SEED_COLUMNS = ("cka_seeds_low", "cka_seeds_high", "n_pairs")


def member_seeds(entry: TargetModels) -> dict[str, int | None]:
    """Each model key of a target's pairs -> its seed (None for the source model P)."""
    seeds: dict[str, int | None] = {SOURCE: None}
    for runs in (entry.pt, entry.rit):
        seeds.update({member_key(run): int(seed) for seed, run in runs.items()})
    return seeds


def per_seed_pair(combinations: pd.DataFrame, seeds: dict[str, int | None]) -> pd.DataFrame:
    """``cka_pairs`` rows (:data:`PAIRS_COLUMNS` less ``target``) from
    ``CKAResult.to_frame(combine=False)``; ``seeds`` maps each model key to its seed."""
    frame = combinations.assign(
        first_seed=pd.array([seeds[key] for key in combinations["model_a"]], dtype="Int64"),
        second_seed=pd.array([seeds[key] for key in combinations["model_b"]], dtype="Int64"),
    )
    return frame[[column for column in PAIRS_COLUMNS if column != "target"]]


def with_seed_intervals(table: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per pair name and layer) with, after its columns, the t-interval
    across seed pairs of :func:`~transferlens.analysis.seed_stats.pair_summary`
    (``cka_seeds_low``, ``cka_seeds_high``) and ``n_pairs``. The ``cka`` column stays
    the one of ``table`` (the same mean over seed pairs, as the bootstrap computed it)."""
    summary = pair_summary(pairs, "cka", by=["pair", "layer"])
    return table.merge(summary[["pair", "layer", *SEED_COLUMNS]], on=["pair", "layer"], how="left")


def analyse_cka(
    context: StudyContext, settings: CkaSettings, progress: Callable[[str], None] | None = None
) -> dict[str, pd.DataFrame]:
    """``cka`` (mean over seed pairs, bootstrap interval over batches, permutation
    p-value ``cka_p``, then the interval across seed pairs and ``n_pairs``),
    ``cka_pairs`` (one row per seed pair: :data:`PAIRS_COLUMNS`), ``cka_matrix`` (the first
    seed pair of each of :data:`MATRIX_PAIRS`, every layer against every layer) and
    ``cka_layers`` (per layer: its stage and depth in the module map, the per-example
    shape, the reduction and the number of features compared; from the first target).
    The layers are ``settings.layers``, else the ``cka_layers`` of the study's module
    map (:attr:`StudyContext.module_map`, computed once per study).
    ``progress`` hears ``real: target 1/3, 4 pairs`` and ``real: matrix PT-PT``."""
    from transferlens.analysis import cka_many, cka_matrix

    tables, seed_pairs, matrices, layer_rows = [], [], [], []
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
            n_permutations=settings.n_permutations,
        )
        rows = per_seed_pair(result.to_frame(combine=False), member_seeds(entry))
        seed_pairs.append(rows.assign(target=target)[list(PAIRS_COLUMNS)])
        tables.append(with_seed_intervals(result.to_frame(), rows).assign(target=target))
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
            matrix = matrix.drop(columns=["pair", "cka_p"])  # no permutations: the table as before
            matrices.append(matrix.assign(target=target, pair=name))
    return {
        "cka": concat(tables),
        "cka_pairs": concat(seed_pairs),
        "cka_matrix": concat(matrices),
        "cka_layers": concat(layer_rows),
    }
