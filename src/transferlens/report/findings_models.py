"""Findings that compare pairs of models: mistakes, CKA, distances and barriers.

Each part compares two pair kinds with disjoint runs (``PT-PT`` against ``RIT-RIT``, or
``RIT-P`` against ``PT-P``) on one target: the mean over each kind's seed pairs, with
the delete-one-run jackknife of that mean (pairs sharing a seed are not independent),
and a Welch t-interval of the difference. Two seeds per arm give one pair of an arm:
no spread across seeds, so such a part is inconclusive (three seeds are needed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from transferlens.analysis.seed_stats import difference
from transferlens.report.findings_core import (
    PAIR_UNIT,
    Finding,
    FindingContext,
    Part,
    decided,
    not_run,
)
from transferlens.report.findings_evidence import pair_kind, pair_seeds

PAIR_RULE = (
    "mean over seed pairs of each kind, delete-one-run jackknife standard errors, Welch "
    "t-interval of the difference; "
)


def _fixed(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:+.{digits}f}"


def _pair_part(
    ctx: FindingContext,
    table: str,
    target: str,
    value: str,
    higher: str,
    lower: str,
    show: Callable[[float], str],
    where: Mapping[str, object] | None = None,
    name: str | None = None,
) -> Part | None:
    """mean(``value`` of ``higher``) - mean(``value`` of ``lower``) on ``target``."""
    pairs, summary = ctx.results.get(f"{table}_pairs"), ctx.results.get(table)
    first = pair_kind(pairs, summary, target, higher, value, where)
    second = pair_kind(pairs, summary, target, lower, value, where)
    if first is None or second is None:
        return None
    first_init, _, second_init = higher.partition("-")
    return Part(
        name or target,
        f"{value}: {higher} - {lower}",
        difference(first, second),
        PAIR_UNIT,
        pair_seeds(pairs, target, (higher, lower)),
        show,
        detail=f"{higher} {first.value:.3g} vs {lower} {second.value:.3g}",
        needs=3 if first_init == second_init else 2,
    )


def _parts(items: list[Part | None]) -> list[Part]:
    return [item for item in items if item is not None]


def mistakes_similar(ctx: FindingContext) -> Finding:
    key, sections = "pt_mistakes_more_similar", ("mistakes",)
    statement = (
        "Two P-T models make more similar mistakes than two RI-T models: higher Cohen's "
        "kappa, also relative to the largest kappa their accuracies allow (kappa / kappa_max)"
    )
    rule = PAIR_RULE + "per target, PT-PT - RIT-RIT of kappa and of kappa / kappa_max"
    parts = []
    for target in ctx.targets:
        parts.append(_pair_part(ctx, "mistakes", target, "kappa", "PT-PT", "RIT-RIT", _fixed(3)))
        ratio = _pair_part(
            ctx, "mistakes", target, "kappa_ratio", "PT-PT", "RIT-RIT", _fixed(3),
            name=f"{target} kappa/kappa_max",
        )  # fmt: skip
        parts.append(ratio)
    found = _parts(parts)
    if not found:
        return not_run(key, statement, "mistakes.csv lacks PT-PT and RIT-RIT", sections)
    return decided(key, statement, rule, found, sections)


def cka_higher(ctx: FindingContext) -> Finding:
    key, sections = "cka_pt_higher", ("cka",)
    statement = "CKA between two P-T models is higher than between two RI-T models at every layer"
    rule = PAIR_RULE + "one part per target and layer: CKA(PT-PT) - CKA(RIT-RIT)"
    cka = ctx.results.get("cka")
    if cka is None:
        return not_run(key, statement, "cka.csv is missing", sections)
    parts = []
    for target in ctx.targets:
        layers = list(dict.fromkeys(cka.loc[cka["target"] == target, "layer"].dropna()))
        for layer in layers:
            parts.append(
                _pair_part(
                    ctx,
                    "cka",
                    target,
                    "cka",
                    "PT-PT",
                    "RIT-RIT",
                    _fixed(3),
                    where={"layer": layer},
                    name=f"{target} {layer}",
                )  # fmt: skip
            )
    found = _parts(parts)
    if not found:
        return not_run(key, statement, "cka.csv lacks PT-PT and RIT-RIT", sections)
    return decided(key, statement, rule, found, sections)


def distance_closer(ctx: FindingContext) -> Finding:
    key, sections = "pt_closer_in_parameters", ("distance",)
    statement = "P-T models are closer to each other and to P than RI-T models (l2, whole network)"
    rule = PAIR_RULE + "per target, l2 RIT-RIT - PT-PT and l2 RIT-P - PT-P"
    parts = []
    where = {"module": "all"}
    for target in ctx.targets:
        for higher, lower in (("RIT-RIT", "PT-PT"), ("RIT-P", "PT-P")):
            parts.append(
                _pair_part(
                    ctx,
                    "distance",
                    target,
                    "l2",
                    higher,
                    lower,
                    _fixed(1),
                    where=where,
                    name=f"{target} {higher} vs {lower}",
                )  # fmt: skip
            )
    found = _parts(parts)
    if not found:
        return not_run(
            key, statement, "distance.csv lacks whole-network rows of the pairs", sections
        )
    return decided(key, statement, rule, found, sections)


def _unaligned(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """Rows without alignment or repair (all rows of a table without those columns)."""
    if frame is None:
        return None
    if "align" in frame.columns:
        frame = frame[frame["align"].fillna("none").astype(str) == "none"]
    if "repair" in frame.columns:
        frame = frame[~frame["repair"].astype(str).str.lower().isin(("true", "1"))]
    return frame


def barrier_higher(ctx: FindingContext) -> Finding:
    key, sections = "barrier_rit_higher", ("interpolation",)
    statement = "The metric barrier between two RI-T models exceeds the one between two P-T models"
    rule = PAIR_RULE + "per target, metric barrier RIT-RIT - PT-PT (without alignment)"
    barriers = ctx.results.get("barriers")
    if barriers is None:
        return not_run(key, statement, "barriers.csv is missing", sections)
    view = _with_tables(ctx, "barriers", _unaligned)
    parts = [
        _pair_part(
            view,
            "barriers",
            target,
            "metric_barrier",
            "RIT-RIT",
            "PT-PT",
            ctx.signed_points(target),
        )  # fmt: skip
        for target in ctx.targets
    ]
    found = _parts(parts)
    if not found:
        return not_run(key, statement, "barriers.csv lacks PT-PT and RIT-RIT", sections)
    return decided(key, statement, rule, found, sections)


def _with_tables(
    ctx: FindingContext, table: str, select: Callable[[pd.DataFrame | None], pd.DataFrame | None]
) -> FindingContext:
    """A context whose ``table`` and ``table_pairs`` are filtered by ``select``."""
    from dataclasses import replace as dc_replace

    tables = dict(ctx.results.tables)
    for name in (table, f"{table}_pairs"):
        chosen = select(tables.get(name))
        if chosen is None or chosen.empty:
            tables.pop(name, None)
        else:
            tables[name] = chosen
    results = dc_replace(ctx.results, tables=tables)
    return FindingContext(results=results, targets=ctx.targets, tasks=ctx.tasks)


def _aligned(method: str) -> Callable[[pd.DataFrame | None], pd.DataFrame | None]:
    def select(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None or "align" not in frame.columns:
            return None
        rows = frame[frame["align"].astype(str) == method]
        if (
            "repair" in rows.columns
            and rows["repair"].astype(str).str.lower().isin(("true", "1")).any()
        ):
            rows = rows[rows["repair"].astype(str).str.lower().isin(("true", "1"))]
        return rows

    return select


def barrier_survives_alignment(ctx: FindingContext) -> Finding:
    key, sections = "rit_barrier_survives_alignment", ("interpolation",)
    statement = (
        "The barrier between two RI-T models survives permutation alignment: aligned (and "
        "repaired) RI-T models still have a higher metric barrier than two P-T models"
    )
    rule = (
        PAIR_RULE + "per target and alignment method, metric barrier of aligned RIT-RIT "
        "(repaired when the study repairs) - metric barrier of PT-PT without alignment; "
        "contradicted when alignment brings RI-T models to P-T's flatness"
    )
    barriers = ctx.results.get("barriers")
    if barriers is None or "align" not in barriers.columns:
        return not_run(key, statement, "barriers.csv has no aligned rows", sections)
    methods = [m for m in dict.fromkeys(barriers["align"].astype(str)) if m != "none"]
    if not methods:
        return not_run(
            key, statement, "interpolation ran without alignment (set align: [none, weights])",
            sections,
        )  # fmt: skip
    plain = _with_tables(ctx, "barriers", _unaligned)
    parts = []
    for method in methods:
        aligned = _with_tables(ctx, "barriers", _aligned(method))
        for target in ctx.targets:
            first = pair_kind(
                aligned.results.get("barriers_pairs"), aligned.results.get("barriers"),
                target, "RIT-RIT", "metric_barrier",
            )  # fmt: skip
            second = pair_kind(
                plain.results.get("barriers_pairs"), plain.results.get("barriers"),
                target, "PT-PT", "metric_barrier",
            )  # fmt: skip
            if first is None or second is None:
                continue
            parts.append(
                Part(
                    f"{target} {method}",
                    "metric barrier: aligned RIT-RIT - PT-PT",
                    difference(first, second),
                    PAIR_UNIT,
                    pair_seeds(ctx.results.get("barriers_pairs"), target, ("RIT-RIT", "PT-PT")),
                    ctx.signed_points(target),
                    detail=f"aligned RIT-RIT {ctx.points(target, first.value)} vs "
                    f"PT-PT {ctx.points(target, second.value)}",
                    needs=3,
                )
            )
    if not parts:
        return not_run(key, statement, "barriers.csv lacks aligned RIT-RIT or PT-PT", sections)
    return decided(key, statement, rule, parts, sections)
