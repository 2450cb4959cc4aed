"""Report sections of the analyses between models: mistakes (with the image gallery), CKA,
parameter distances and interpolation barriers (module criticality:
:mod:`transferlens.report.sections_criticality`)."""

from __future__ import annotations

import pandas as pd

from transferlens.report.blocks import (
    NoteBlock,
    Section,
    SectionContext,
    SectionKind,
    TableBlock,
)
from transferlens.report.figures_analysis import (
    plot_cka_layers,
    plot_cka_matrices,
    plot_distance_modules,
    plot_distance_stages,
    plot_interpolation,
    plot_kappa,
)
from transferlens.report.formatting import (
    format_interval,
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


# How ``cka_layers.csv``'s ``reduction`` turned a layer's output into features.
REDUCTIONS = {
    "flatten": "feature maps flattened (all C x H x W values)",
    "tokens=all": "token outputs [T, D] flattened to T x D features (tokens=all)",
    "tokens=cls": "the class token (token 0) alone (tokens=cls)",
    "tokens=mean": "the mean over the tokens (tokens=mean)",
    "as is": "used as they are (one vector per example)",
}


def _cka_layer_blocks(ctx: SectionContext, section: Section) -> None:
    """Where each compared layer sits, its per-example shape and how it became features."""
    layers = ctx.layers
    if layers is None:
        return
    table = layers.table
    stated = "; ".join(
        f"{', '.join(names)}: {REDUCTIONS.get(reduction, reduction)}"
        for reduction, names in layers.reductions().items()
    )
    section.blocks.append(NoteBlock(f"Features compared at each layer: {stated}."))
    rows = [
        [
            str(layer), _text(table.loc[layer, "stage"]), format_number(table.loc[layer, "depth"]),
            _text(table.loc[layer, "shape"]), _text(table.loc[layer, "reduction"]),
            _count(table.loc[layer, "features"]),
        ]
        for layer in layers.order(table.index)
    ]  # fmt: skip
    section.blocks.append(
        TableBlock(
            "The compared layers (results/cka_layers.csv), input to output: the unit's stage "
            "and depth, the output's shape per example and the features CKA compares.",
            ["layer", "stage", "depth", "shape per example", "reduction", "features"],
            rows,
        )
    )


def _text(value: object) -> str:
    return "n/a" if pd.isna(value) else str(value)  # type: ignore[arg-type]


def _fill_cka(ctx: SectionContext, section: Section) -> None:
    cka = ctx.results.tables["cka"]
    order = ctx.layers.order(cka["layer"].dropna()) if ctx.layers else None
    labels = ctx.layers.labels() if ctx.layers else None
    _cka_layer_blocks(ctx, section)
    for target in ctx.targets_in(cka):
        rows = cka[cka["target"] == target]
        layers = [
            layer for layer in order or dict.fromkeys(rows["layer"]) if layer in set(rows["layer"])
        ]
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
    ordered = " by depth, stage in brackets where it is not the layer's own name" if order else ""
    section.blocks.append(
        ctx.figure(
            plot_cka_layers(cka, ctx.targets, order, labels),
            "cka_layers",
            f"CKA per layer (input to output{ordered}) for each pair of models; bands are the "
            "intervals. Each panel's y axis is scaled to its values with a margin (it does "
            "not span 0 to 1), so differences near 1 stay visible.",
        )
    )
    matrix = ctx.results.get("cka_matrix")
    if matrix is None:
        section.missing_note("cka_matrix", "the layer-by-layer CKA heatmap")
        return
    section.blocks.append(
        ctx.figure(
            plot_cka_matrices(matrix, ctx.targets, order),
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
                plot_distance_modules(distance, ctx.targets, ctx.unit_order(), ctx.unit_stages()),
                "distance_modules",
                "l2 distance per unit, from the input side of the network (left) to the "
                "output; stages are named along the top where they hold several units.",
            )
        )
    stages = ctx.results.get("distance_stages")
    if stages is not None:
        _add_stages(ctx, section, stages)


def _add_stages(ctx: SectionContext, section: Section, stages: pd.DataFrame) -> None:
    """Distance per stage: the figure and its table (n/a: a unit of the stage was left
    out, e.g. the head, which P and P-T do not share)."""
    order = ctx.units.stage_names if ctx.units and ctx.units.from_map else None
    section.blocks.append(
        ctx.figure(
            plot_distance_stages(stages, ctx.targets, order),
            "distance_stages",
            "l2 distance per stage: the square root of the sum of its units' squared l2 "
            "distances (no point where a unit of the stage is not shared by the pair).",
        )
    )
    names = [n for n in order or dict.fromkeys(stages["stage"]) if n in set(stages["stage"])]
    means = stages.groupby(["target", "pair", "stage"])["l2"].mean()
    rows = [
        [target, pair, *[format_number(means.get((target, pair, name)), 2) for name in names]]
        for target in ctx.targets_in(stages)
        for pair in pair_order(stages[stages["target"] == target])
    ]
    section.blocks.append(
        TableBlock(
            "l2 distance per stage (mean over seed pairs; n/a: a unit was left out).",
            ["target", "pair", *names],
            rows,
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
    "Linear CKA between the features of the same layer in two models (paper Table 1): a "
    "layer's output, or its input for a name ending in ':in' (the head's input holds the "
    "pooled features); brackets are intervals. Then CKA between every pair of layers.",
    tables=("cka",),
    fill=_fill_cka,
)

DISTANCE = SectionKind(
    "distance",
    "Parameter distances",
    "l2 distance between the parameter vectors of two models, whole network (paper Table 2), "
    "per unit of the module map and per stage.",
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
