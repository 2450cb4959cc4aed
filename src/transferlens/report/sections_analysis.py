"""Report sections of the analyses between models: mistakes (with the image gallery), CKA,
parameter distances, interpolation barriers and module criticality."""

from __future__ import annotations

import pandas as pd

from transferlens.report.blocks import (
    Section,
    SectionContext,
    SectionKind,
    TableBlock,
)
from transferlens.report.figures_analysis import (
    plot_cka_layers,
    plot_cka_matrices,
    plot_conv1_paths,
    plot_criticality,
    plot_distance_modules,
    plot_interpolation,
    plot_kappa,
    plot_rewind_heatmap,
)
from transferlens.report.formatting import (
    format_interval,
    format_metric,
    format_metric_difference,
    format_number,
)
from transferlens.report.sections_gallery import gallery_blocks
from transferlens.report.seed_pairs import (
    describe_pairs,
    pair_order,
    seeds_by_model,
    table_labels,
)


def _general(value: object) -> str:
    """Three significant digits (criticality spans orders of magnitude), ``n/a`` if empty."""
    return "n/a" if pd.isna(value) else f"{float(value):.3g}"  # type: ignore[arg-type]


def _count(value: object) -> str:
    """A count of examples; a mean over seed pairs may be fractional (20.5), so it is
    printed with one decimal rather than truncated."""
    if pd.isna(value):
        return "n/a"
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else f"{number:.1f}"


def _fill_mistakes(ctx: SectionContext, section: Section) -> None:
    mistakes = ctx.results.tables["mistakes"]
    seeds = seeds_by_model(ctx.results.get("runs"))
    rows = []
    for target in ctx.targets:
        for pair in pair_order(mistakes[mistakes["target"] == target]):
            chosen = mistakes[(mistakes["target"] == target) & (mistakes["pair"] == pair)]
            first, second = table_labels(seeds, target, pair)
            compared = describe_pairs(seeds, target, pair)
            for row in chosen.itertuples(index=False):
                rows.append(
                    [
                        target, pair, compared, _count(row.n), _count(row.both_right),
                        _count(row.both_wrong),
                        f"{_count(row.only_first_wrong)} ({first} wrong)",
                        f"{_count(row.only_second_wrong)} ({second} wrong)",
                        format_interval(row.kappa, row.kappa_low, row.kappa_high),
                    ]
                )  # fmt: skip
    section.blocks.append(
        TableBlock(
            "The 2 x 2 table of each pair (counts of test examples, the mean over its seed "
            "pairs where there are several) and Cohen's kappa [interval]. 'Models' names the "
            "first and second model of the pair, from the complete main runs of "
            "results/runs.csv (within P-T or RI-T, the lower seed is first).",
            [
                "target",
                "pair",
                "models",
                "n",
                "both right",
                "both wrong",
                "only first wrong",
                "only second wrong",
                "kappa",
            ],
            rows,
        )  # fmt: skip
    )
    section.blocks.append(
        ctx.figure(
            plot_kappa(mistakes, ctx.targets),
            "kappa",
            "Cohen's kappa per pair with its interval (one point per row of "
            "results/mistakes.csv: a pair's mean over its seed pairs).",
        )
    )
    gallery_blocks(ctx, section, seeds)


def _fill_cka(ctx: SectionContext, section: Section) -> None:
    cka = ctx.results.tables["cka"]
    for target in ctx.targets_in(cka):
        rows = cka[cka["target"] == target]
        layers = list(dict.fromkeys(rows["layer"]))
        means = rows.groupby(["pair", "layer"])[["cka", "cka_low", "cka_high"]].mean()
        table = []
        for pair in pair_order(rows):
            cells = [
                format_interval(*means.loc[(pair, layer)])
                if (pair, layer) in means.index
                else "n/a"
                for layer in layers
            ]
            table.append([pair, *cells])
        section.blocks.append(
            TableBlock(f"{target}: CKA per layer [interval].", ["pair", *layers], table)
        )
    section.blocks.append(
        ctx.figure(
            plot_cka_layers(cka, ctx.targets),
            "cka_layers",
            "CKA per layer for each pair of models; bands are the intervals. Each panel's "
            "y axis is scaled to its values with a margin (it does not span 0 to 1), so "
            "differences near 1 stay visible.",
        )
    )
    matrix = ctx.results.get("cka_matrix")
    if matrix is None:
        section.missing_note("cka_matrix", "the layer-by-layer CKA heatmap")
        return
    section.blocks.append(
        ctx.figure(
            plot_cka_matrices(matrix, ctx.targets),
            "cka_matrix",
            "CKA between every layer of the pair's first model (rows) and every layer of its "
            "second (columns); one row of panels per target.",
        )
    )


def _fill_distance(ctx: SectionContext, section: Section) -> None:
    distance = ctx.results.tables["distance"]
    whole = distance[distance["module"] == "all"]
    targets = ctx.targets_in(whole)
    if targets:
        means = whole.groupby(["pair", "target"])["l2"].mean()
        rows = [
            [pair] + [format_number(means.get((pair, t)), 1) for t in targets]
            for pair in pair_order(whole)
        ]
        section.blocks.append(
            TableBlock(
                "l2 distance of the whole network (mean over seed pairs).", ["pair", *targets], rows
            )
        )
    if (distance["module"] != "all").any():
        section.blocks.append(
            ctx.figure(
                plot_distance_modules(distance, ctx.targets),
                "distance_modules",
                "l2 distance per module, from the bottom of the network (left) to the top.",
            )
        )


def _fill_interpolation(ctx: SectionContext, section: Section) -> None:
    interpolation, barriers = ctx.results.get("interpolation"), ctx.results.get("barriers")
    if interpolation is not None:
        section.blocks.append(
            ctx.figure(
                plot_interpolation(interpolation, barriers, ctx.targets, ctx.tasks),
                "interpolation",
                "Along the line between two models: test metric (left, barrier in the legend) "
                "and test loss (right).",
            )
        )
    else:
        section.missing_note("interpolation", "the interpolation curve")
    if barriers is None:
        section.missing_note("barriers", "the barrier table")
        return
    rows = []
    for target in ctx.targets:
        chosen = barriers[barriers["target"] == target]
        for pair in pair_order(chosen):
            row = chosen[chosen["pair"] == pair][["loss_barrier", "metric_barrier"]].mean()
            rows.append(
                [
                    target,
                    pair,
                    format_number(row["loss_barrier"], 3),
                    format_metric_difference(row["metric_barrier"], ctx.tasks[target]),
                ]
            )
    section.blocks.append(
        TableBlock(
            "Barriers (mean over seed pairs).",
            ["target", "pair", "loss barrier", "metric barrier"],
            rows,
        )
    )


def _add_rewinding(ctx: SectionContext, section: Section, criticality: pd.DataFrame) -> None:
    """The rewinding heatmap, the criticality per module and their table (paper Fig. 5)."""
    section.blocks.append(
        ctx.figure(
            plot_rewind_heatmap(criticality, ctx.targets, ctx.tasks),
            "rewind_heatmap",
            "Test metric after rewinding each module (rows) of each model (columns).",
        )
    )
    section.blocks.append(
        ctx.figure(
            plot_criticality(criticality, ctx.targets),
            "criticality",
            "Criticality per module (higher = the module cannot move back or take noise).",
        )
    )
    rows = []
    for target in ctx.targets:
        chosen = criticality[criticality["target"] == target]
        columns = ["rewind_metric", "criticality", "alpha", "sigma"]
        means = chosen.groupby(["module", "init"], sort=False)[columns].mean()
        for module in dict.fromkeys(chosen["module"]):
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
    section.blocks.append(
        TableBlock(
            "Rewound metric and criticality (with its minimising alpha and sigma) per module.",
            [
                "target",
                "module",
                "P-T rewound",
                "P-T criticality",
                "RI-T rewound",
                "RI-T criticality",
            ],
            rows,
        )
    )


def _fill_criticality(ctx: SectionContext, section: Section) -> None:
    criticality, paths = ctx.results.get("criticality"), ctx.results.get("criticality_path")
    if criticality is None:
        section.missing_note("criticality", "the rewinding heatmap and the criticality values")
    else:
        _add_rewinding(ctx, section, criticality)
    if paths is None:
        section.missing_note("criticality_path", "the conv1 picture over (distance, sigma)")
        return
    caption = (
        "conv1: test metric over the distance from its initial value (x) and the noise sigma "
        "(y, ticked at exactly the noise levels run), along the direct path and along the "
        "training checkpoints."
    )
    figure = plot_conv1_paths(paths, ctx.targets, ctx.tasks)
    section.blocks.append(ctx.figure(figure, "conv1_paths", caption))


MISTAKES = SectionKind(
    "mistakes",
    "Common and uncommon mistakes",
    "For two models on the same test set: examples both get right, both get wrong (common "
    "mistakes) and exactly one gets wrong (uncommon). Cohen's kappa of the two "
    "correct/incorrect vectors measures how consistent their errors are; brackets are "
    "its interval.",
    tables=("mistakes",),
    fill=_fill_mistakes,
)

CKA = SectionKind(
    "cka",
    "Feature similarity (CKA)",
    "Linear CKA between the outputs of the same layer in two models (paper Table 1), "
    "brackets are intervals; then CKA between every pair of layers.",
    tables=("cka",),
    fill=_fill_cka,
)

DISTANCE = SectionKind(
    "distance",
    "Parameter distances",
    "l2 distance between the parameter vectors of two models, whole network (paper Table 2) "
    "and per module.",
    tables=("distance",),
    fill=_fill_distance,
)

INTERPOLATION = SectionKind(
    "interpolation",
    "Performance barriers",
    "Test metric and loss of (1 - lambda) theta + lambda theta' between two models (paper "
    "Fig. 4). The barrier is the largest drop below the straight line between the ends.",
    tables=("interpolation", "barriers"),
    fill=_fill_interpolation,
)

CRITICALITY = SectionKind(
    "criticality",
    "Module criticality",
    "Rewinding one module to its initial value, every other module final (paper Fig. 5), "
    "and Chatterji et al.'s criticality mu_i = min alpha^2 ||theta_f - theta_0||^2 / sigma^2 "
    "over the (alpha, sigma) whose noisy, partly rewound network keeps the training loss; "
    "then conv1's test metric over (distance from its init, noise sigma) (paper Fig. 6).",
    tables=("criticality", "criticality_path"),
    fill=_fill_criticality,
)
