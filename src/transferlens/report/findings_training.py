"""Findings about training: P-T vs RI-T, block shuffling and pre-training checkpoints.

Relative gap = 100 (A_PT - A_RIT) / A_PT. "Smallest block size" is the smallest b > 0
(pixel shuffle, b = 0, is not a block size).
"""

from __future__ import annotations

import pandas as pd

from transferlens.report.findings_core import (
    SATURATION_TOLERANCE,
    Finding,
    FindingContext,
    headline,
    not_run,
    relative_gap,
)


def pt_beats_rit(ctx: FindingContext) -> Finding:
    key, statement, sections = "pt_beats_rit", "P-T beats RI-T on every target", ("training",)
    values, source = headline(ctx)
    if not values:
        return not_run(key, statement, "runs.csv and reuse.csv have no P-T/RI-T pair", sections)
    parts = [
        f"{target}: P-T {ctx.metric(target, pt)} vs RI-T {ctx.metric(target, rit)}"
        for target, (pt, rit) in values.items()
    ]
    holds = all(pt > rit for pt, rit in values.values())
    return Finding(
        key, statement, holds, f"final test metric ({source}): " + "; ".join(parts), sections
    )


def gap_largest_on_closest(ctx: FindingContext) -> Finding:
    key = "gap_largest_on_closest"
    statement = "The relative gap of P-T over RI-T is largest on the target closest to the source"
    sections = ("training",)
    values, source = headline(ctx)
    if len(values) < 2:
        return not_run(
            key, statement, "needs P-T and RI-T results on at least two targets", sections
        )
    gaps = {target: relative_gap(pt, rit) for target, (pt, rit) in values.items()}
    closest = next(target for target in ctx.targets if target in gaps)
    largest = max(gaps, key=lambda target: gaps[target])
    shown = "; ".join(f"{target} {gap:.1f}%" for target, gap in gaps.items())
    evidence = f"closest target {closest}; relative gaps ({source}, closest first): {shown}"
    return Finding(key, statement, largest == closest, evidence, sections)


def _reuse_by_target(ctx: FindingContext) -> dict[str, pd.DataFrame]:
    reuse = ctx.results.get("reuse")
    if reuse is None:
        return {}
    columns = ["metric_pt", "metric_rit", "relative_gap", "speed_pt", "speed_rit"]
    out = {}
    for target in ctx.targets:
        rows = reuse[reuse["target"] == target]
        if rows.empty:
            continue
        # Mean over seeds per block size; the unshuffled row has an empty block size.
        grouped = rows.groupby(rows["block_size"].fillna(-1), sort=True)[columns].mean()
        out[target] = grouped
    return out


def _smallest_block(table: pd.DataFrame) -> int | None:
    sizes = [int(size) for size in table.index if size > 0]
    return min(sizes) if sizes else None


def gap_shrinks(ctx: FindingContext) -> Finding:
    key = "gap_shrinks_with_shuffling"
    statement = (
        "On the closest target the relative gap shrinks from unshuffled images to the "
        "smallest block size"
    )
    sections = ("reuse",)
    tables = _reuse_by_target(ctx)
    usable = [t for t, table in tables.items() if -1 in table.index and _smallest_block(table)]
    if not usable:
        return not_run(key, statement, "reuse.csv lacks unshuffled and shuffled rows", sections)
    target = usable[0]
    table = tables[target]
    block = _smallest_block(table)
    unshuffled, shuffled = table.loc[-1, "relative_gap"], table.loc[block, "relative_gap"]
    note = (
        ""
        if target == ctx.targets[0]
        else f" (closest target with block shuffling; {ctx.targets[0]} has none)"
    )
    evidence = (
        f"{target}{note}: relative gap {unshuffled:.1f}% unshuffled -> {shuffled:.1f}% "
        f"at block size "
        f"{block} (P-T {ctx.metric(target, table.loc[block, 'metric_pt'])} vs RI-T "
        f"{ctx.metric(target, table.loc[block, 'metric_rit'])})"
    )
    return Finding(key, statement, bool(shuffled < unshuffled), evidence, sections)


def speed_edge_at_smallest_block(ctx: FindingContext) -> Finding:
    key = "pt_faster_at_smallest_block"
    statement = (
        "P-T keeps an edge in optimisation speed at the smallest block size, on every target"
    )
    sections = ("reuse",)
    parts, verdicts = [], []
    for target, table in _reuse_by_target(ctx).items():
        block = _smallest_block(table)
        if block is None:
            continue
        speed_pt, speed_rit = table.loc[block, "speed_pt"], table.loc[block, "speed_rit"]
        verdicts.append(bool(speed_pt > speed_rit))
        parts.append(
            f"{target} block {block}: speed P-T {ctx.metric(target, speed_pt)} vs RI-T "
            f"{ctx.metric(target, speed_rit)}"
        )
    if not verdicts:
        return not_run(key, statement, "reuse.csv has no shuffled block size", sections)
    return Finding(key, statement, all(verdicts), "; ".join(parts), sections)


def pretrain_saturates(ctx: FindingContext) -> Finding:
    key = "pretrain_gains_saturate"
    statement = "Fine-tuning gains saturate before the last pre-training checkpoint"
    sections = ("pretrain",)
    table = ctx.results.get("pretrain_checkpoints")
    if table is None:
        return not_run(key, statement, "pretrain_checkpoints.csv is missing", sections)
    parts, verdicts = [], []
    for target in ctx.targets:
        rows = table[(table["target"] == target) & table["pretrain_epoch"].notna()]
        by_epoch = rows.groupby("pretrain_epoch")["final_test_metric"].mean().sort_index()
        if len(by_epoch) < 2:
            continue
        best_epoch, best = int(by_epoch.idxmax()), float(by_epoch.max())
        last_epoch = int(by_epoch.index[-1])
        saturated = by_epoch[by_epoch >= best - SATURATION_TOLERANCE]
        first = int(saturated.index[0])
        verdicts.append(first < last_epoch)
        parts.append(
            f"{target}: within {ctx.points(target, SATURATION_TOLERANCE)} of the best "
            f"({ctx.metric(target, best)} at epoch {best_epoch}) "
            f"from epoch {first} of {last_epoch}; "
            f"last {ctx.metric(target, by_epoch.iloc[-1])}"
        )
    if not verdicts:
        return not_run(
            key, statement, "pretrain_checkpoints.csv has < 2 checkpoints per target", sections
        )
    return Finding(key, statement, all(verdicts), "; ".join(parts), sections)
