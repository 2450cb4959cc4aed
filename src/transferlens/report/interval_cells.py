"""How the report states an interval: the caption phrases and the table cells of the
analyses between models (mistakes, CKA, distances).

Every interval comes from a results table, never from the report: ``<stat>_low/_high``
(the bootstrap over test images) and ``<stat>_seeds_low/_high`` (the 95% t-interval
across seed pairs, :func:`transferlens.analysis.seed_stats.pair_summary`). Columns a
study folder lacks (written before them) leave their cells and phrases out.
"""

from __future__ import annotations

import pandas as pd

from transferlens.report.figures import has_seed_intervals
from transferlens.report.formatting import (
    format_bracket,
    format_interval,
    format_number,
    format_p_value,
    has_values,
    is_missing,
)

SEED_PAIRS = "95% t-interval across seed pairs (delete-one-run jackknife)"
BOOTSTRAP = "bootstrap over test images"


def seeds_cell(row: object, stat: str, digits: int = 2) -> str:
    """``[low, high] (k pairs)``: the table's interval of ``stat`` across seed pairs."""
    low = getattr(row, f"{stat}_seeds_low", None)
    high = getattr(row, f"{stat}_seeds_high", None)
    pairs = getattr(row, "n_pairs", None)
    if is_missing(pairs):
        return format_bracket(low, high, digits)
    count = float(pairs)  # type: ignore[arg-type]
    return f"{format_bracket(low, high, digits)} ({count:g} pair{'' if count == 1 else 's'})"


def mistakes_columns(mistakes: pd.DataFrame) -> tuple[bool, bool]:
    """Which added columns the table holds: (seed-pair interval, kappa_max and the ratio)."""
    return (
        has_seed_intervals(mistakes, "kappa"),
        has_values(mistakes, "kappa_max", "kappa_ratio"),
    )


def kappa_cells(row: object, seeds: bool, bounds: bool) -> list[str]:
    """The kappa cells of one row: kappa [bootstrap], then what the table adds."""
    cells = [format_interval(row.kappa, row.kappa_low, row.kappa_high)]
    if seeds:
        cells.append(seeds_cell(row, "kappa"))
    if bounds:
        cells.append(format_number(row.kappa_max))
        cells.append(
            format_interval(
                row.kappa_ratio, getattr(row, "kappa_ratio_low", None),
                getattr(row, "kappa_ratio_high", None),
            )
        )  # fmt: skip
        if seeds:
            cells.append(seeds_cell(row, "kappa_ratio"))
    return cells


def kappa_caption(seeds: bool, bounds: bool, pairs: pd.DataFrame | None) -> str:
    caption = (
        f"Cohen's kappa per pair with its interval ({BOOTSTRAP}; one point per row of "
        "results/mistakes.csv: a pair's mean over its seed pairs)."
    )
    if seeds:
        caption += f" Wide translucent bars: the {SEED_PAIRS}."
    if pairs is not None and "kappa" in pairs.columns:
        caption += " Open dots: each seed pair (results/mistakes_pairs.csv)."
    if bounds:
        caption += " Black bars: kappa_max, the bound the two models' accuracies allow."
    return caption


CKA_P = (
    "p: the permutation p-value of CKA under the null that the two models' features at "
    "that layer are unrelated (the examples of one model's features shuffled), "
    "p = (1 + #{permuted CKA >= observed}) / (1 + permutations); small p says the "
    "similarity is more than chance. It cannot go below 1 / (1 + permutations)."
)


def cka_cell(row: pd.Series, seeds: bool, p_values: bool) -> str:
    """``cka [bootstrap]``, then ``seeds [low, high]`` and ``p = ...`` where present."""
    cell = format_interval(row["cka"], row["cka_low"], row["cka_high"])
    if seeds:
        cell += f"; seeds {format_bracket(row['cka_seeds_low'], row['cka_seeds_high'])}"
    if p_values:
        cell += f"; p = {format_p_value(row['cka_p'])}"
    return cell


def l2_cell(frame: pd.DataFrame, key: tuple, digits: int) -> str:
    """The mean l2 of ``key`` with the table's interval across seed pairs, where present."""
    if key not in frame.index:
        return "n/a"
    row = frame.loc[key]
    return format_interval(row["l2"], row.get("l2_seeds_low"), row.get("l2_seeds_high"), digits)


def l2_means(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """l2 (and its interval across seed pairs, when the table has one) by ``keys``."""
    values = ["l2"] + (["l2_seeds_low", "l2_seeds_high"] if has_seed_intervals(table, "l2") else [])
    return table.groupby(keys)[values].mean()
