"""Findings about training: P-T vs RI-T, block shuffling and pre-training checkpoints.

Every test here is over seeds: one final metric (or optimisation speed) per run of
``runs.csv``. Relative gap = 100 (A_PT - A_RIT) / A_PT, with the delete-one-run
jackknife over both arms' runs. "Smallest block size" is the smallest b > 0 (pixel
shuffle, b = 0, is not a block size).
"""

from __future__ import annotations

import pandas as pd

from transferlens.analysis.reuse import UNSHUFFLED, reuse_runs
from transferlens.analysis.seed_stats import difference, seed_estimate
from transferlens.errors import UserInputError
from transferlens.report.findings_core import (
    SATURATION_TOLERANCE,
    SEED_UNIT,
    Finding,
    FindingContext,
    Part,
    decided,
    not_run,
)
from transferlens.report.findings_evidence import (
    arm_difference,
    gap_estimate,
    main_values,
    seeds_text,
)
from transferlens.results import PRETRAIN_CHECKPOINTS_GROUP, has_groups, runs_in_group

WELCH = "per target, mean P-T - mean RI-T over seeds (one run per seed), Welch t-interval; "


def _percent(value: float) -> str:
    return f"{value:+.1f}%"


def pt_beats_rit(ctx: FindingContext) -> Finding:
    key, sections = "pt_beats_rit", ("training",)
    statement = "P-T beats RI-T in final test metric on every target"
    rule = WELCH + "reproduced when every target's interval lies above 0"
    runs = ctx.results.get("runs")
    parts = []
    for target in ctx.targets:
        pt, rit = main_values(runs, target, "PT"), main_values(runs, target, "RIT")
        if not pt or not rit:
            continue
        parts.append(
            Part(
                target,
                "P-T - RI-T final test metric",
                arm_difference(pt, rit),
                SEED_UNIT,
                seeds_text(PT=len(pt), RIT=len(rit)),
                ctx.signed_points(target),
                detail=f"P-T {ctx.metric(target, sum(pt) / len(pt))} vs "
                f"RI-T {ctx.metric(target, sum(rit) / len(rit))}",
            )
        )
    if not parts:
        return not_run(key, statement, "runs.csv has no complete P-T/RI-T main runs", sections)
    return decided(key, statement, rule, parts, sections)


def gap_largest_on_closest(ctx: FindingContext) -> Finding:
    key, sections = "gap_largest_on_closest", ("training",)
    statement = "The relative gap of P-T over RI-T is largest on the target closest to the source"
    rule = (
        "relative gap 100 (P-T - RI-T) / P-T per target (delete-one-run jackknife over both "
        "arms' seeds); one part per other target: gap(closest) - gap(other), Welch t-interval"
    )
    runs = ctx.results.get("runs")
    gaps = {}
    for target in ctx.targets:
        pt, rit = main_values(runs, target, "PT"), main_values(runs, target, "RIT")
        if pt and rit:
            gaps[target] = (gap_estimate(pt, rit), seeds_text(PT=len(pt), RIT=len(rit)))
    if len(gaps) < 2:
        return not_run(
            key, statement, "needs P-T and RI-T main runs on at least two targets", sections
        )
    closest = next(iter(gaps))
    parts = [
        Part(
            f"{closest} vs {other}",
            f"gap({closest}) - gap({other})",
            difference(gaps[closest][0], estimate),
            SEED_UNIT,
            runs_text,
            _percent,
        )
        for other, (estimate, runs_text) in gaps.items()
        if other != closest
    ]
    shown = ", ".join(f"{target} {estimate.value:.1f}%" for target, (estimate, _) in gaps.items())
    finding = decided(key, statement, rule, parts, sections)
    return _prefixed(finding, f"relative gaps (closest first): {shown}; ")


def _prefixed(finding: Finding, text: str) -> Finding:
    from dataclasses import replace

    return replace(finding, evidence=text + finding.evidence)


def _block_values(ctx: FindingContext) -> dict[str, pd.DataFrame]:
    """The finished block-shuffle runs (or main runs without a sweep) per target."""
    runs = ctx.results.get("runs")
    if runs is None:
        return {}
    try:
        frame = reuse_runs(runs)
    except UserInputError:
        return {}
    out = {}
    for target in ctx.targets:
        rows = frame[frame["target"] == target]
        if not rows.empty:
            out[target] = rows
    return out


def _smallest_block(rows: pd.DataFrame) -> int | None:
    sizes = sorted(int(size) for size in set(rows["block_key"]) if size > 0)
    return sizes[0] if sizes else None


def _arm(rows: pd.DataFrame, block: int, init: str, column: str) -> list[float]:
    chosen = rows[(rows["block_key"] == block) & (rows["init"] == init)]
    return [float(value) for value in pd.to_numeric(chosen[column], errors="coerce").dropna()]


def gap_shrinks(ctx: FindingContext) -> Finding:
    key, sections = "gap_shrinks_with_shuffling", ("reuse",)
    statement = (
        "On the closest target with block shuffling, the relative gap shrinks from "
        "unshuffled images to the smallest block size, and P-T still keeps an edge in "
        "final test metric at the smallest block size"
    )
    rule = (
        "two parts over seeds: gap(unshuffled) - gap(smallest block) (jackknife gaps, Welch "
        "t-interval), and P-T - RI-T final metric at the smallest block (Welch t-interval)"
    )
    usable = {
        target: rows
        for target, rows in _block_values(ctx).items()
        if UNSHUFFLED in set(rows["block_key"]) and _smallest_block(rows)
    }
    if not usable:
        return not_run(key, statement, "runs.csv lacks unshuffled and shuffled runs", sections)
    target, rows = next(iter(usable.items()))
    block = _smallest_block(rows)
    assert block is not None
    arms = {
        size: (
            _arm(rows, size, "PT", "final_test_metric"),
            _arm(rows, size, "RIT", "final_test_metric"),
        )
        for size in (UNSHUFFLED, block)
    }
    counts = seeds_text(PT=len(arms[block][0]), RIT=len(arms[block][1]))
    unshuffled, shuffled = (gap_estimate(*arms[size]) for size in (UNSHUFFLED, block))
    parts = [
        Part(
            f"{target}: gap shrinks",
            f"gap(unshuffled) - gap(block {block})",
            difference(unshuffled, shuffled),
            SEED_UNIT,
            counts,
            _percent,
        ),
        Part(
            f"{target}: P-T edge at block {block}",
            f"P-T - RI-T final test metric at block {block}",
            arm_difference(*arms[block]),
            SEED_UNIT,
            counts,
            ctx.signed_points(target),
        ),
    ]
    note = "" if target == ctx.targets[0] else f"({ctx.targets[0]} has no block shuffling) "
    text = (
        f"{note}{target}: relative gap {unshuffled.value:.1f}% unshuffled -> "
        f"{shuffled.value:.1f}% at block size {block}; "
    )
    return _prefixed(decided(key, statement, rule, parts, sections), text)


def speed_edge_at_smallest_block(ctx: FindingContext) -> Finding:
    key, sections = "pt_faster_at_smallest_block", ("reuse",)
    statement = (
        "P-T keeps an edge in optimisation speed at the smallest block size, on every target"
    )
    rule = (
        "per target, P-T - RI-T optimisation speed at its smallest block size over seeds "
        "(Welch t-interval); a target without block-shuffled runs has no evidence, so the "
        "claim on every target cannot be reproduced without them"
    )
    by_target = _block_values(ctx)
    parts = []
    for target in ctx.targets:
        rows = by_target.get(target)
        block = None if rows is None else _smallest_block(rows)
        if rows is None or block is None:
            parts.append(
                Part(
                    target,
                    "P-T - RI-T optimisation speed",
                    None,
                    SEED_UNIT,
                    "",
                    missing="no block-shuffled runs (block_shuffle.targets)",
                )  # fmt: skip
            )
            continue
        pt = _arm(rows, block, "PT", "optimization_speed")
        rit = _arm(rows, block, "RIT", "optimization_speed")
        parts.append(
            Part(
                f"{target} block {block}",
                f"P-T - RI-T optimisation speed at block {block}",
                arm_difference(pt, rit),
                SEED_UNIT,
                seeds_text(PT=len(pt), RIT=len(rit)),
                ctx.signed_points(target),
            )
        )
    if all(part.effect is None for part in parts):
        return not_run(key, statement, "runs.csv has no shuffled block size", sections)
    return decided(key, statement, rule, parts, sections)


def pretrain_saturates(ctx: FindingContext) -> Finding:
    key, sections = "pretrain_gains_saturate", ("pretrain",)
    statement = (
        "Fine-tuning gains saturate before the last pre-training checkpoint: an earlier "
        "checkpoint does as well as the last"
    )
    tolerance = SATURATION_TOLERANCE
    rule = (
        "per target, a non-inferiority test over seeds: metric(best earlier checkpoint) - "
        f"metric(last) + {tolerance:g} (the tolerance, {tolerance * 100:g} accuracy points "
        "or 0.01 ROC-AUC), Welch t-interval"
    )
    runs = ctx.results.get("runs")
    if runs is None or ctx.results.get("pretrain_checkpoints") is None:
        return not_run(key, statement, "pretrain_checkpoints.csv is missing", sections)
    sweep = runs_in_group(runs, PRETRAIN_CHECKPOINTS_GROUP) if has_groups(runs) else runs
    sweep = sweep[(sweep["kind"] == "target") & (sweep["init"] == "PT")]
    sweep = sweep[sweep["block_size"].isna() & sweep["pretrain_epoch"].notna()]
    parts = []
    for target in ctx.targets:
        rows = sweep[sweep["target"] == target]
        by_epoch = {
            int(epoch): [float(v) for v in pd.to_numeric(group["final_test_metric"]).dropna()]
            for epoch, group in rows.groupby("pretrain_epoch")
        }
        by_epoch = {epoch: values for epoch, values in by_epoch.items() if values}
        if len(by_epoch) < 2:
            continue
        last = max(by_epoch)
        best = max(
            (e for e in by_epoch if e != last), key=lambda e: sum(by_epoch[e]) / len(by_epoch[e])
        )
        effect = difference(seed_estimate(by_epoch[best]), seed_estimate(by_epoch[last]))
        parts.append(
            Part(
                f"{target}: epoch {best} vs {last}",
                f"metric(epoch {best}) - metric(epoch {last}) + tolerance",
                effect.shifted(tolerance),
                SEED_UNIT,
                f"{len(by_epoch[best])} and {len(by_epoch[last])} seeds",
                ctx.signed_points(target),
            )
        )
    if not parts:
        return not_run(
            key, statement, "pretrain_checkpoints.csv has < 2 checkpoints per target", sections
        )
    return decided(key, statement, rule, parts, sections)
