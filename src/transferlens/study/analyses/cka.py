"""Study adapter of CKA: per-layer similarity of each pair (per seed pair and as the mean
over seed pairs), the layer-by-layer matrix (likewise), and what was compared at each
layer (``cka_layers``). One pass of each target's test loader serves every table."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from transferlens.analysis.cka_result import CKAResult
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
MATRIX_CELL = ("layer_a", "layer_b")
MATRIX_PAIRS_COLUMNS = (
    "target", "pair", "first_seed", "second_seed", *MATRIX_CELL, "cka", "cka_low", "cka_high",
)  # fmt: skip


def member_seeds(entry: TargetModels) -> dict[str, int | None]:
    """Each model key of a target's pairs -> its seed (None for the source model P)."""
    seeds: dict[str, int | None] = {SOURCE: None}
    for runs in (entry.pt, entry.rit):
        seeds.update({member_key(run): int(seed) for seed, run in runs.items()})
    return seeds


def per_seed_pair(
    combinations: pd.DataFrame,
    seeds: dict[str, int | None],
    columns: tuple[str, ...] = PAIRS_COLUMNS,
) -> pd.DataFrame:
    """Per-seed-pair rows (``columns`` less ``target``: :data:`PAIRS_COLUMNS`, or
    :data:`MATRIX_PAIRS_COLUMNS` for a matrix) from ``CKAResult.to_frame(combine=False)``;
    ``seeds`` maps each model key to its seed."""
    frame = combinations.assign(
        first_seed=pd.array([seeds[key] for key in combinations["model_a"]], dtype="Int64"),
        second_seed=pd.array([seeds[key] for key in combinations["model_b"]], dtype="Int64"),
    )
    return frame[[column for column in columns if column != "target"]]


def with_seed_intervals(
    table: pd.DataFrame, pairs: pd.DataFrame, cell: tuple[str, ...] = ("layer",)
) -> pd.DataFrame:
    """``table`` (one row per pair name and ``cell``: a layer, or ``layer_a, layer_b``)
    with, after its columns, the t-interval across seed pairs of
    :func:`~transferlens.analysis.seed_stats.pair_summary` (``cka_seeds_low``,
    ``cka_seeds_high``) and ``n_pairs``. The ``cka`` column stays the one of ``table``
    (the same mean over seed pairs, as the bootstrap computed it)."""
    keys = ["pair", *cell]
    summary = pair_summary(pairs, "cka", by=keys)
    return table.merge(summary[[*keys, *SEED_COLUMNS]], on=keys, how="left")


def matrix_tables(
    matrices: CKAResult, seeds: dict[str, int | None]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(cka_matrix rows, cka_matrix_pairs rows)`` (without ``target``) of the pairs of
    :data:`MATRIX_PAIRS` in that order: the mean over seed pairs with its bootstrap
    interval over batches and, after, the interval across seed pairs and ``n_pairs``;
    and each seed pair's matrix with its own interval (:data:`MATRIX_PAIRS_COLUMNS`)."""
    wanted = [name for name in MATRIX_PAIRS if name in matrices.pair_names]
    pairs = per_seed_pair(matrices.to_frame(combine=False), seeds, MATRIX_PAIRS_COLUMNS)
    pairs = pd.concat([pairs[pairs["pair"] == name] for name in wanted], ignore_index=True)
    means = matrices.to_frame().drop(columns="cka_p")  # the matrix has no permutation null
    means = pd.concat([means[means["pair"] == name] for name in wanted], ignore_index=True)
    return with_seed_intervals(means, pairs, MATRIX_CELL), pairs


def analyse_cka(
    context: StudyContext, settings: CkaSettings, progress: Callable[[str], None] | None = None
) -> dict[str, pd.DataFrame]:
    """``cka`` (mean over seed pairs, bootstrap interval over batches, permutation
    p-value ``cka_p``, then the interval across seed pairs and ``n_pairs``),
    ``cka_pairs`` (one row per seed pair: :data:`PAIRS_COLUMNS`), ``cka_matrix`` (each of
    :data:`MATRIX_PAIRS`, every layer against every layer: the mean over seed pairs, its
    bootstrap interval over batches, then the interval across seed pairs and
    ``n_pairs``), ``cka_matrix_pairs`` (each seed pair's matrix:
    :data:`MATRIX_PAIRS_COLUMNS`) and ``cka_layers`` (per layer: its stage and depth in
    the module map, the per-example shape, the reduction and the number of features
    compared; from the first target). The matrices come from the same pass and
    resampled batches as ``cka`` (no forward pass of their own). The layers are
    ``settings.layers``, else the ``cka_layers`` of the study's module map
    (:attr:`StudyContext.module_map`, computed once per study).
    ``progress`` hears ``real: target 1/3, 4 pairs``."""
    from transferlens.analysis import cka_many

    tables, seed_pairs, matrices, matrix_pairs, layer_rows = [], [], [], [], []
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
            matrices=settings.matrix,
        )
        seeds = member_seeds(entry)
        rows = per_seed_pair(result.to_frame(combine=False), seeds)
        seed_pairs.append(rows.assign(target=target)[list(PAIRS_COLUMNS)])
        tables.append(with_seed_intervals(result.to_frame(), rows).assign(target=target))
        if not layer_rows:
            layer_rows.append(result.layers_frame(module_map))
        if result.matrices is not None:
            means, per_pair = matrix_tables(result.matrices, seeds)
            matrices.append(means.assign(target=target))
            matrix_pairs.append(per_pair.assign(target=target)[list(MATRIX_PAIRS_COLUMNS)])
    return {
        "cka": concat(tables),
        "cka_pairs": concat(seed_pairs),
        "cka_matrix": concat(matrices),
        "cka_matrix_pairs": concat(matrix_pairs),
        "cka_layers": concat(layer_rows),
    }
