"""Findings that compare pairs of models: mistakes, CKA, distances, barriers, rewinding.

Each compares the mean over a pair's rows (seed pairs) of one table column, per target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from transferlens.report.findings_core import Finding, FindingContext, not_run
from transferlens.report.formatting import format_interval
from transferlens.report.units import StudyUnits, study_units, table_units
from transferlens.results import lower_units, main_runs


@dataclass(frozen=True)
class _Comparison:
    """mean(``one``) against mean(``other``) on one target (and layer, if any)."""

    target: str
    where: str | None
    one: str
    other: str
    first: pd.Series
    second: pd.Series
    holds: bool

    def overlap(self, low: str, high: str) -> bool:
        """Do the two intervals (columns ``low``, ``high``) overlap?"""
        return bool(self.first[low] <= self.second[high] and self.second[low] <= self.first[high])


def _compare_pairs(
    ctx: FindingContext,
    frame: pd.DataFrame | None,
    columns: list[str],
    comparisons: list[tuple[str, str]],
    by: str | None = None,
    smaller: bool = False,
) -> list[_Comparison]:
    """For each target (and each value of column ``by``), test mean(one) > mean(other).

    Means are over the rows of a (target, pair[, by]); ``columns[0]`` is compared (with
    ``smaller``: mean(one) < mean(other)). Comparisons whose pairs are absent are skipped.
    """
    if frame is None or frame.empty:
        return []
    index = ["target", "pair"] + ([by] if by else [])
    means = frame.groupby(index)[columns].mean()
    out = []
    for target in ctx.targets:
        wheres: list[str | None] = [None]
        if by:
            wheres = list(dict.fromkeys(frame.loc[frame["target"] == target, by].dropna()))
        for where in wheres:
            for one, other in comparisons:
                keys = [(target, pair) + ((where,) if by else ()) for pair in (one, other)]
                if not all(key in means.index for key in keys):
                    continue
                first, second = means.loc[keys[0]], means.loc[keys[1]]
                a, b = first[columns[0]], second[columns[0]]
                holds = bool(a < b) if smaller else bool(a > b)
                out.append(_Comparison(target, where, one, other, first, second, holds))
    return out


def _listed(comparisons: list[_Comparison], describe: Callable[[_Comparison], str]) -> str:
    return "; ".join(describe(c) + ("" if c.holds else " [does not hold]") for c in comparisons)


def mistakes_similar(ctx: FindingContext) -> Finding:
    key = "pt_mistakes_more_similar"
    statement = "Two P-T models make more similar mistakes than two RI-T models (Cohen's kappa)"
    columns = ["kappa", "kappa_low", "kappa_high"]
    found = _compare_pairs(ctx, ctx.results.get("mistakes"), columns, [("PT-PT", "RIT-RIT")])
    if not found:
        return not_run(key, statement, "mistakes.csv lacks PT-PT and RIT-RIT", ("mistakes",))

    def describe(c: _Comparison) -> str:
        overlap = " (intervals overlap)" if c.overlap("kappa_low", "kappa_high") else ""
        first, second = (format_interval(*row[columns]) for row in (c.first, c.second))
        return f"{c.target}: kappa PT-PT {first} vs RIT-RIT {second}{overlap}"

    holds = all(c.holds for c in found)
    return Finding(key, statement, holds, _listed(found, describe), ("mistakes",))


def cka_higher(ctx: FindingContext) -> Finding:
    key = "cka_pt_higher"
    statement = "CKA between two P-T models is higher than between two RI-T models at every layer"
    columns = ["cka", "cka_low", "cka_high"]
    found = _compare_pairs(ctx, ctx.results.get("cka"), columns, [("PT-PT", "RIT-RIT")], by="layer")
    if not found:
        return not_run(key, statement, "cka.csv lacks PT-PT and RIT-RIT", ("cka",))
    parts = []
    for target in dict.fromkeys(c.target for c in found):
        mine = [c for c in found if c.target == target]
        pt = [float(c.first["cka"]) for c in mine]
        rit = [float(c.second["cka"]) for c in mine]
        text = (
            f"{target}: higher at {sum(c.holds for c in mine)} of {len(mine)} layers "
            f"(PT-PT {min(pt):.2f} to {max(pt):.2f}, RIT-RIT {min(rit):.2f} to {max(rit):.2f})"
        )
        failed = [c for c in mine if not c.holds]
        if failed:
            text += "; not at " + ", ".join(
                f"{c.where} (PT-PT {format_interval(*c.first[columns])} vs RIT-RIT "
                f"{format_interval(*c.second[columns])})"
                for c in failed
            )
        parts.append(text)
    return Finding(key, statement, all(c.holds for c in found), "; ".join(parts), ("cka",))


def distance_closer(ctx: FindingContext) -> Finding:
    key = "pt_closer_in_parameters"
    statement = "P-T models are closer to each other and to P than RI-T models (l2, whole network)"
    distance = ctx.results.get("distance")
    whole = None if distance is None else distance[distance["module"] == "all"]
    found = _compare_pairs(
        ctx, whole, ["l2"], [("PT-PT", "RIT-RIT"), ("PT-P", "RIT-P")], smaller=True
    )
    if not found:
        return not_run(
            key, statement, "distance.csv lacks whole-network rows of the pairs", ("distance",)
        )

    def describe(c: _Comparison) -> str:
        return f"{c.target}: {c.one} {c.first['l2']:.1f} vs {c.other} {c.second['l2']:.1f}"

    return Finding(
        key, statement, all(c.holds for c in found), "l2 " + _listed(found, describe), ("distance",)
    )


def barrier_higher(ctx: FindingContext) -> Finding:
    key = "barrier_rit_higher"
    statement = "The metric barrier between two RI-T models exceeds the one between two P-T models"
    found = _compare_pairs(
        ctx, ctx.results.get("barriers"), ["metric_barrier"], [("RIT-RIT", "PT-PT")]
    )
    if not found:
        return not_run(key, statement, "barriers.csv lacks PT-PT and RIT-RIT", ("interpolation",))

    def describe(c: _Comparison) -> str:
        return (
            f"{c.target}: RIT-RIT {ctx.points(c.target, c.first['metric_barrier'])} vs PT-PT "
            f"{ctx.points(c.target, c.second['metric_barrier'])}"
        )

    evidence = "metric barrier " + _listed(found, describe)
    return Finding(key, statement, all(c.holds for c in found), evidence, ("interpolation",))


def lower_modules(modules: list[str]) -> list[str]:
    """The units of depth below 1/3 of ``modules`` in model order
    (:func:`transferlens.results.lower_units`): what ``module_map.csv``'s ``lower``
    column says, for tables written without it (a ResNet-10: ``conv1, layer1.0``)."""
    return lower_units(modules)


def _rewound_lower(rows: pd.DataFrame, mapped: StudyUnits | None) -> tuple[list[str], pd.DataFrame]:
    """The lower modules among the rewound rows of one model, and those rows.

    The map's ``lower`` units decide when ``module_map.csv`` exists; otherwise the rule
    runs on the rewound modules in the table's order (the whole-network row, which
    rewinds nothing, is no module).
    """
    rewound = rows[rows["rewind_metric"].notna()]
    modules = table_units(rewound)
    lower = [m for m in modules if m in mapped.lower] if mapped else lower_modules(modules)
    return lower, rewound[rewound["module"].isin(lower)]


def rewind_costs_rit_more(ctx: FindingContext) -> Finding:
    key = "rewind_lower_costs_rit_more"
    statement = "Rewinding the lower modules to their initial values costs RI-T more than P-T"
    sections = ("criticality",)
    criticality, runs = ctx.results.get("criticality"), ctx.results.get("runs")
    if criticality is None:
        return not_run(key, statement, "criticality.csv is missing", sections)
    if runs is None:
        return not_run(key, statement, "runs.csv (the un-rewound metric) is missing", sections)
    baseline = main_runs(runs).groupby(["target", "init"])["final_test_metric"].mean()
    units = study_units(ctx.results)
    mapped = units if units is not None and units.from_map else None
    parts, verdicts, unmapped = [], [], False
    for target in ctx.targets:
        rows = criticality[criticality["target"] == target]
        costs = {}
        for init in ("PT", "RIT"):
            init_rows = rows[rows["init"] == init]
            if init_rows.empty or (target, init) not in baseline.index:
                continue
            lower, rewound = _rewound_lower(init_rows, mapped)
            if not lower:
                unmapped = True
                continue
            costs[init] = (float(baseline[(target, init)] - rewound["rewind_metric"].mean()), lower)
        if len(costs) < 2:
            continue
        holds = costs["RIT"][0] > costs["PT"][0]
        verdicts.append(holds)
        parts.append(
            f"{target} ({', '.join(costs['PT'][1])}): "
            f"RI-T loses {ctx.points(target, costs['RIT'][0])} "
            f"vs P-T {ctx.points(target, costs['PT'][0])}"
        )
    if not verdicts:
        why = "criticality.csv/runs.csv lack P-T and RI-T of a target"
        if unmapped and mapped is not None:
            why = f"criticality.csv rewinds none of the lower modules ({', '.join(mapped.lower)})"
        return not_run(key, statement, why, sections)
    return Finding(
        key, statement, all(verdicts), "mean over lower modules: " + "; ".join(parts), sections
    )
