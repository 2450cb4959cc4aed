"""The report's section on module criticality: rewinding each unit to its initial value
(paper Fig. 5), Chatterji et al.'s criticality per unit, the lower modules the finding
averages over, and one unit's picture over (distance, noise) (paper Fig. 6)."""

from __future__ import annotations

import pandas as pd

from transferlens.report.blocks import NoteBlock, Section, SectionContext, SectionKind, TableBlock
from transferlens.report.figures_criticality import (
    plot_criticality,
    plot_rewind_heatmap,
    plot_unit_paths,
)
from transferlens.report.formatting import format_metric, format_number
from transferlens.report.units import path_unit


def _general(value: object) -> str:
    """Three significant digits (criticality spans orders of magnitude), ``n/a`` if empty."""
    return "n/a" if pd.isna(value) else f"{float(value):.3g}"  # type: ignore[arg-type]


def _rows(ctx: SectionContext, criticality: pd.DataFrame) -> list[list[str]]:
    """Per target and unit (model order): rewound metric and criticality of P-T and RI-T."""
    rows = []
    for target in ctx.targets:
        chosen = criticality[criticality["target"] == target]
        columns = ["rewind_metric", "criticality", "alpha", "sigma"]
        means = chosen.groupby(["module", "init"], sort=False)[columns].mean()
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
                cells += [
                    format_metric(row["rewind_metric"], ctx.tasks[target]),
                    f"{_general(row['criticality'])} (alpha {format_number(row['alpha'])}, "
                    f"sigma {format_number(row['sigma'])})",
                ]
            rows.append(cells)
    return rows


def _add_rewinding(ctx: SectionContext, section: Section, criticality: pd.DataFrame) -> None:
    """The rewinding heatmap, the criticality per unit and their table (paper Fig. 5)."""
    order = ctx.unit_order()
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
    section.blocks.append(
        ctx.figure(
            plot_criticality(criticality, ctx.targets, order, ctx.unit_stages()),
            "criticality",
            "Criticality per unit (higher = the unit cannot move back or take noise); stages "
            "are named along the top where they hold several units.",
        )
    )
    section.blocks.append(
        TableBlock(
            "Rewound metric and criticality (with its minimising alpha and sigma) per unit.",
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
