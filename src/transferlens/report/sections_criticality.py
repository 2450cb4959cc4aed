"""The report's section on module criticality: rewinding each unit to its initial value
(paper Fig. 5), Chatterji et al.'s criticality per unit, the lower modules the finding
averages over, and one unit's picture over (distance, noise) (paper Fig. 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transferlens.analysis.seed_stats import seed_estimate
from transferlens.report.blocks import NoteBlock, Section, SectionContext, SectionKind, TableBlock
from transferlens.report.figures_criticality import (
    UNRESOLVED,
    plot_criticality,
    plot_rewind_heatmap,
    plot_rewinding_seeds,
    plot_unit_paths,
)
from transferlens.report.formatting import format_metric, format_number
from transferlens.report.units import _study_spec, path_unit


def _general(value: object) -> str:
    """Three significant digits (criticality spans orders of magnitude), ``n/a`` if empty."""
    return "n/a" if pd.isna(value) else f"{float(value):.3g}"  # type: ignore[arg-type]


def _bound(value: float) -> str:
    return "inf" if value == float("inf") else _general(value)


def criticality_cell(rows: pd.DataFrame) -> str:
    """One model's (or seeds') criticality of a unit: one seed -> its value with the
    bootstrap interval over the training examples; several -> each seed's value and the
    mean over seeds of log10(1 + criticality) with its t-interval across seeds."""
    values = rows["criticality"].to_numpy(float)
    if len(rows) == 1:
        text = _general(values[0])
        if "criticality_low" in rows.columns and pd.notna(rows["criticality_low"].iloc[0]):
            low, high = rows["criticality_low"].iloc[0], rows["criticality_high"].iloc[0]
            text += f" [{_bound(low)}, {_bound(high)}]"
        return text
    estimate = seed_estimate(np.log10(1.0 + values))
    low, high = estimate.interval()
    seeds = ", ".join(_general(v) for v in values)
    mean = f"log10(1+mu) {estimate.value:.2f}"
    spread = f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) else ""
    return f"{seeds}; {mean}{spread}"


def _rows(ctx: SectionContext, criticality: pd.DataFrame) -> list[list[str]]:
    """Per target and unit (model order): rewound metric and criticality of P-T and RI-T."""
    rows = []
    for target in ctx.targets:
        chosen = criticality[criticality["target"] == target]
        columns = ["rewind_metric", "criticality", "alpha", "sigma"]
        means = chosen.groupby(["module", "init"], sort=False)[columns].mean()
        if "resolved" in chosen.columns:
            means["resolved"] = chosen.groupby(["module", "init"], sort=False)["resolved"].all()
        groups = dict(list(chosen.groupby(["module", "init"], sort=False)))
        modules = list(dict.fromkeys(chosen["module"]))
        if ctx.units is not None:
            modules = ctx.units.order(modules)
        for module in modules:
            cells = [target, module]
            for init in ("PT", "RIT"):
                if (module, init) not in means.index:
                    cells += ["n/a", "n/a"]
                    continue
                row = means.loc[(module, init)]
                value = criticality_cell(groups[(module, init)])
                if not bool(row.get("resolved", True)):
                    value = f"{UNRESOLVED} by the grid"
                cells += [
                    format_metric(row["rewind_metric"], ctx.tasks[target]),
                    f"{value} (alpha {format_number(row['alpha'])}, "
                    f"sigma {format_number(row['sigma'])})",
                ]
            rows.append(cells)
    return rows


def definition_note(ctx: SectionContext, criticality: pd.DataFrame) -> str:
    """The criticality's definition in words and numbers: the loss bound, the grid."""
    analyses = _study_spec(ctx.results.study).get("analyses")
    chosen = analyses.get("criticality") if isinstance(analyses, dict) else None
    settings = chosen if isinstance(chosen, dict) else {}
    alphas, sigmas = settings.get("alphas", 11), settings.get("sigmas", 11)
    bounds = criticality["epsilon"].dropna() if "epsilon" in criticality.columns else []
    low, high = settings.get("sigma_span", (1e-3, 10.0))
    if settings.get("definition", "epsilon") == "reference":
        return (
            f"Definition: reference (the TensorFlow code's): the bound is "
            f"{settings.get('tolerance', 1.01):g} x each model's final training loss, sigmas "
            f"{sigmas} points of linspace(1e-16, 1), alphas {alphas} of linspace(0, 1). At "
            "convergence the bound is ~0 and the minimiser sits on the grid's edge: such "
            f"units are marked {UNRESOLVED}."
        )
    epsilon = f"{float(pd.Series(bounds).iloc[0]):g}" if len(bounds) else "0.1"
    return (
        f"Definition: the largest noise each unit takes while the mean training loss stays "
        f"at or below epsilon = {epsilon} (absolute, the same for every unit and model; "
        f"Chatterji et al.), over alphas {alphas} points of linspace(0, 1) and sigmas {sigmas} "
        f"points log-spaced from {low:g} to {high:g} times the unit's weight RMS. A unit "
        f"whose minimiser sits on the smallest or largest sigma, or with no point within "
        f"the bound, is {UNRESOLVED} by the grid: no number is shown for it."
    )


def _add_rewinding(ctx: SectionContext, section: Section, criticality: pd.DataFrame) -> None:
    """The rewinding heatmap, the criticality per unit and their table (paper Fig. 5)."""
    order = ctx.unit_order()
    section.blocks.append(NoteBlock(definition_note(ctx, criticality)))
    lower = ctx.units.lower if ctx.units else ()
    if ctx.units is not None:
        section.blocks.append(
            NoteBlock(
                f"The finding on rewinding averages over the lower modules: "
                f"{ctx.units.lower_rule()} (units from {ctx.units.source})."
            )
        )
    section.blocks.append(
        ctx.figure(
            plot_rewind_heatmap(criticality, ctx.targets, ctx.tasks, order, lower),
            "rewind_heatmap",
            "Test metric after rewinding each unit (rows, input side at the top; the lower "
            "modules in bold) of each model (columns).",
        )
    )
    rewinding = ctx.results.get("rewinding")
    if rewinding is not None and not rewinding.empty:
        section.blocks.append(
            ctx.figure(
                plot_rewinding_seeds(rewinding, ctx.targets, ctx.tasks, order),
                "rewinding_seeds",
                "Test metric after rewinding each unit, one point per seed with its 95% "
                "bootstrap interval over the test set (rewinding.csv).",
            )
        )
    section.blocks.append(
        ctx.figure(
            plot_criticality(criticality, ctx.targets, order, ctx.unit_stages()),
            "criticality",
            "Criticality per unit on the finding's scale log10(1 + criticality) (higher = the "
            "unit cannot move back or take noise): one point per seed searched, its bar the "
            "95% bootstrap interval over the training examples (the noise draws fixed; a caret: "
            "unbounded above, resamples whose minimiser sits on the smallest sigma); with "
            "several seeds a hollow diamond, the mean over seeds with its 95% t-interval across "
            "seeds. Stages are named along the top where they hold several units; x: "
            f"{UNRESOLVED} by the grid (no number).",
        )
    )
    section.blocks.append(
        TableBlock(
            "Rewound metric and criticality (with its minimising alpha and sigma) per unit; "
            "one seed: the criticality with its 95% bootstrap interval over the training "
            "examples in brackets; several seeds: each seed's value, then the mean of "
            "log10(1 + criticality) over seeds with its 95% t-interval across seeds (alpha, "
            "sigma: means over seeds).",
            [
                "target",
                "module",
                "P-T rewound",
                "P-T criticality",
                "RI-T rewound",
                "RI-T criticality",
            ],
            _rows(ctx, criticality),
        )  # fmt: skip
    )


def _fill_criticality(ctx: SectionContext, section: Section) -> None:
    criticality, paths = ctx.results.get("criticality"), ctx.results.get("criticality_path")
    if criticality is None:
        section.missing_note("criticality", "the rewinding heatmap and the criticality values")
    else:
        _add_rewinding(ctx, section, criticality)
    if paths is None:
        section.missing_note("criticality_path", "one unit's picture over (distance, sigma)")
        return
    unit = path_unit(ctx.results, paths)
    caption = (
        f"{unit} (the unit the path walks): test metric over the distance from its initial "
        "value (x) and the noise sigma (y, ticked at exactly the noise levels run), along "
        "the direct path and along the training checkpoints; every other unit final."
    )
    if {"metric_low", "metric_high"} <= set(paths.columns) and paths["metric_low"].notna().any():
        half = float(((paths["metric_high"] - paths["metric_low"]) / 2).max())
        caption += (
            " Each cell's 95% bootstrap interval over the test examples (noise draws fixed) is "
            f"in criticality_path.csv (metric_low/high, loss_low/high); the widest metric "
            f"interval is +-{half:.3f} (the metric as a fraction)."
        )
    figure = plot_unit_paths(paths, ctx.targets, ctx.tasks, unit)
    section.blocks.append(ctx.figure(figure, "criticality_path", caption))


CRITICALITY = SectionKind(
    "criticality",
    "Module criticality",
    "Rewinding one unit of the module map to its initial value, every other unit final "
    "(paper Fig. 5), and Chatterji et al.'s criticality mu_i = min alpha^2 ||theta_f - "
    "theta_0||^2 / sigma^2 over the (alpha, sigma) whose noisy, partly rewound network "
    "keeps the training loss; then one unit's test metric over (distance from its init, "
    "noise sigma) (paper Fig. 6): the map's first unit unless the study names another, "
    "named in the figure's caption.",
    tables=("criticality", "criticality_path"),
    fill=_fill_criticality,
)
