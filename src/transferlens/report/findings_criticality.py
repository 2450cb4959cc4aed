"""Findings about the lower modules: rewinding them, and their criticality.

"Lower modules" are the units of the study's module map in the first third of the
depth (``module_map.csv``'s ``lower`` column; :func:`transferlens.results.lower_units`
for tables written without it). Each test is over seeds: one value per model (run).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from transferlens.report.findings_core import (
    SEED_UNIT,
    Finding,
    FindingContext,
    Part,
    decided,
    not_run,
)
from transferlens.report.findings_evidence import arm_difference, seeds_text
from transferlens.report.units import StudyUnits, study_units, table_units
from transferlens.results import lower_units, main_runs


def lower_modules(modules: list[str]) -> list[str]:
    """The units of depth below 1/3 of ``modules`` in model order
    (:func:`transferlens.results.lower_units`): what ``module_map.csv``'s ``lower``
    column says, for tables written without it (a ResNet-10: ``conv1, layer1.0``)."""
    return lower_units(modules)


def _lower_of(rows: pd.DataFrame, mapped: StudyUnits | None) -> list[str]:
    """The lower modules among ``rows``' modules (the whole-network row is none)."""
    modules = table_units(rows)
    return [m for m in modules if m in mapped.lower] if mapped else lower_modules(modules)


def _mapped(ctx: FindingContext) -> StudyUnits | None:
    units = study_units(ctx.results)
    return units if units is not None and units.from_map else None


def _baselines(ctx: FindingContext) -> dict[tuple[str, str, int], float]:
    """(target, init, seed) -> the final test metric of that main run."""
    runs = ctx.results.get("runs")
    if runs is None:
        return {}
    main = main_runs(runs).dropna(subset=["final_test_metric", "seed"])
    return {
        (str(t), str(i), int(s)): float(v)
        for t, i, s, v in zip(main["target"], main["init"], main["seed"], main["final_test_metric"])
    }


def _first_seeds(ctx: FindingContext) -> dict[tuple[str, str], int]:
    """(target, init) -> the lowest seed (the model criticality.csv describes)."""
    first: dict[tuple[str, str], int] = {}
    for target, init, seed in _baselines(ctx):
        key = (target, init)
        first[key] = min(first.get(key, seed), seed)
    return first


def _rewinding_rows(ctx: FindingContext) -> pd.DataFrame | None:
    """One row per (target, init, seed, module) with ``rewind_metric``: rewinding.csv,
    else criticality.csv's rows (its model: each arm's first seed)."""
    rewinding = ctx.results.get("rewinding")
    if rewinding is not None:
        return rewinding
    criticality = ctx.results.get("criticality")
    if criticality is None or "rewind_metric" not in criticality.columns:
        return None
    first = _first_seeds(ctx)
    seeds = [
        first.get((str(t), str(i))) for t, i in zip(criticality["target"], criticality["init"])
    ]
    return criticality.assign(seed=seeds).dropna(subset=["seed"])


def rewind_costs_rit_more(ctx: FindingContext) -> Finding:
    key, sections = "rewind_lower_costs_rit_more", ("criticality",)
    statement = "Rewinding the lower modules to their initial values costs RI-T more than P-T"
    rule = (
        "per model (seed), cost = its final test metric - the mean test metric with each "
        "lower module rewound alone; per target, mean RI-T cost - mean P-T cost over seeds, "
        "Welch t-interval"
    )
    rows, baselines = _rewinding_rows(ctx), _baselines(ctx)
    if rows is None:
        return not_run(key, statement, "criticality.csv is missing", sections)
    if not baselines:
        return not_run(key, statement, "runs.csv (the un-rewound metric) is missing", sections)
    mapped = _mapped(ctx)
    rows = rows[rows["rewind_metric"].notna()]
    parts, lower_seen = [], []
    for target in ctx.targets:
        costs: dict[str, list[float]] = {}
        for init in ("PT", "RIT"):
            model_rows = rows[(rows["target"] == target) & (rows["init"] == init)]
            lower = _lower_of(model_rows, mapped) if not model_rows.empty else []
            lower_seen = lower_seen or lower
            for seed, group in model_rows[model_rows["module"].isin(lower)].groupby("seed"):
                baseline = baselines.get((target, init, int(seed)))
                if baseline is not None:
                    rewound = float(pd.to_numeric(group["rewind_metric"]).mean())
                    costs.setdefault(init, []).append(baseline - rewound)
        if len(costs) < 2:
            continue
        parts.append(
            Part(
                target,
                "RI-T cost - P-T cost of rewinding the lower modules",
                arm_difference(costs["RIT"], costs["PT"]),
                SEED_UNIT,
                seeds_text(PT=len(costs["PT"]), RIT=len(costs["RIT"])),
                ctx.signed_points(target),
                detail=f"RI-T loses {ctx.points(target, float(np.mean(costs['RIT'])))} vs "
                f"P-T {ctx.points(target, float(np.mean(costs['PT'])))}",
            )
        )
    if not parts:
        why = "criticality.csv/runs.csv lack P-T and RI-T of a target"
        if mapped is not None:
            why = f"no rewinding of the lower modules ({', '.join(mapped.lower)})"
        return not_run(key, statement, why, sections)
    finding = decided(key, statement, rule, parts, sections)
    if lower_seen:
        from dataclasses import replace

        finding = replace(
            finding, evidence=f"lower modules {', '.join(lower_seen)}; {finding.evidence}"
        )
    return finding


def _resolved(rows: pd.DataFrame) -> pd.Series:
    if "resolved" not in rows.columns:
        return pd.Series(True, index=rows.index)
    return rows["resolved"].astype(str).str.lower().isin(("true", "1"))


def lower_more_critical(ctx: FindingContext) -> Finding:
    key, sections = "rit_lower_more_critical", ("criticality",)
    statement = "RI-T's lower modules are more critical than P-T's (module criticality)"
    rule = (
        "per model (seed), the mean of log10(1 + criticality) over the lower modules (a "
        "criticality of 0 -- the module can be rewound entirely -- counts as 0), from "
        "resolved values only (a lower module not resolved by the grid leaves its model "
        "out); per target, RI-T - P-T over seeds, Welch t-interval"
    )
    criticality = ctx.results.get("criticality")
    if criticality is None or "criticality" not in criticality.columns:
        return not_run(key, statement, "criticality.csv is missing", sections)
    frame = criticality
    if "seed" not in frame.columns:
        first = _first_seeds(ctx)
        seeds = [first.get((str(t), str(i)), 0) for t, i in zip(frame["target"], frame["init"])]
        frame = frame.assign(seed=seeds)
    mapped = _mapped(ctx)
    parts = []
    for target in ctx.targets:
        values: dict[str, list[float]] = {}
        unresolved: list[str] = []
        for init in ("PT", "RIT"):
            model_rows = frame[(frame["target"] == target) & (frame["init"] == init)]
            if model_rows.empty:
                continue
            lower = _lower_of(model_rows, mapped)
            for seed, group in model_rows[model_rows["module"].isin(lower)].groupby("seed"):
                values_of = pd.to_numeric(group["criticality"])
                if not (_resolved(group) & values_of.notna()).all():
                    unresolved.append(f"{init} seed {int(seed)}")
                    continue
                logs = np.log10(1.0 + values_of.to_numpy(float))
                values.setdefault(init, []).append(float(logs.mean()))
        if not unresolved and len(values) < 2:
            continue
        if len(values) < 2:
            parts.append(
                Part(
                    target,
                    "log10(1 + criticality) RI-T - P-T",
                    None,
                    SEED_UNIT,
                    "",
                    missing=f"lower modules not resolved by the grid ({', '.join(unresolved)})",
                )  # fmt: skip
            )
            continue
        effect = arm_difference(values["RIT"], values["PT"])
        parts.append(
            Part(
                target,
                "mean log10(1 + criticality) of the lower modules, RI-T - P-T",
                effect,
                SEED_UNIT,
                seeds_text(PT=len(values["PT"]), RIT=len(values["RIT"])),
                lambda value: f"{value:+.2f}" if math.isfinite(value) else "nan",
                detail=f"log10(1 + criticality) RI-T {np.mean(values['RIT']):.2f} vs "
                f"P-T {np.mean(values['PT']):.2f}",
            )
        )
    if not parts:
        return not_run(key, statement, "criticality.csv lacks P-T and RI-T of a target", sections)
    return decided(key, statement, rule, parts, sections)
