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
from transferlens.report.figures import has_seed_intervals
from transferlens.report.figures_analysis import (
    plot_cka_layers,
    plot_cka_matrices,
    plot_distance_modules,
    plot_distance_stages,
    plot_kappa,
)
from transferlens.report.figures_interpolation import interpolation_caption, plot_interpolation
from transferlens.report.formatting import (
    format_bracket,
    format_interval,
    format_metric_difference,
    format_number,
    has_values,
    is_missing,
)
from transferlens.report.interval_cells import (
    BOOTSTRAP,
    CKA_P,
    SEED_PAIRS,
    cka_cell,
    kappa_caption,
    kappa_cells,
    l2_cell,
    l2_means,
    mistakes_columns,
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
    with_seeds, with_bounds = mistakes_columns(mistakes)
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
                        *kappa_cells(row, with_seeds, with_bounds),
                    ]
                )  # fmt: skip
    header = ["target", "pair", "models", "n", "both right", "both wrong", "only first wrong",
              "only second wrong", "kappa"]  # fmt: skip
    caption = (
        "The 2 x 2 table of each pair (counts of test examples, the mean over its seed "
        f"pairs where there are several) and Cohen's kappa [{BOOTSTRAP}]. 'Models' names the "
        "first and second model of the pair, from the complete main runs of "
        "results/runs.csv (within P-T or RI-T, the lower seed is first)."
    )
    if with_seeds:
        header.append("kappa across seed pairs")
        caption += f" 'Across seed pairs': the {SEED_PAIRS}; n/a with one seed pair."
    if with_bounds:
        header += ["kappa_max", "kappa / kappa_max"]
        header += ["kappa / kappa_max across seed pairs"] if with_seeds else []
        caption += (
            " kappa_max: the largest kappa two models of these accuracies can reach "
            "(Geirhos et al. 2020); kappa / kappa_max [bootstrap over test images] compares "
            "pairs whose models differ in accuracy."
        )
    section.blocks.append(TableBlock(caption, header, rows))
    section.blocks.append(
        ctx.figure(
            plot_kappa(mistakes, ctx.targets, ctx.results.get("mistakes_pairs")),
            "kappa",
            kappa_caption(with_seeds, with_bounds, ctx.results.get("mistakes_pairs")),
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
    seeds, p_values = has_seed_intervals(cka, "cka"), has_values(cka, "cka_p")
    values = ["cka", "cka_low", "cka_high"]
    values += ["cka_seeds_low", "cka_seeds_high"] if seeds else []
    values += ["cka_p"] if p_values else []
    _cka_layer_blocks(ctx, section)
    if p_values:
        section.blocks.append(NoteBlock(f"{CKA_P}"))
    caption = f"CKA per layer [{BOOTSTRAP}]"
    if seeds:
        caption += f"; seeds [the {SEED_PAIRS}; n/a with one seed pair]"
    if p_values:
        caption += "; p = permutation p-value"
    for target in ctx.targets_in(cka):
        rows = cka[cka["target"] == target]
        layers = [
            layer for layer in order or dict.fromkeys(rows["layer"]) if layer in set(rows["layer"])
        ]
        means = rows.groupby(["pair", "layer"])[values].mean()
        table = []
        for pair in pair_order(rows):
            cells = [
                cka_cell(means.loc[(pair, layer)], seeds, p_values)
                if (pair, layer) in means.index
                else "n/a"
                for layer in layers
            ]
            table.append([pair, *cells])
        section.blocks.append(TableBlock(f"{target}: {caption}.", ["pair", *layers], table))
    ordered = " by depth, stage in brackets where it is not the layer's own name" if order else ""
    pairs = ctx.results.get("cka_pairs")
    marks = f"bands are the intervals ({BOOTSTRAP})"
    if seeds:
        marks += (
            f"; error bars the {SEED_PAIRS}, cut at the panel's edge where they run past it "
            "(the table above gives their bounds)"
        )
    if pairs is not None and "cka" in pairs.columns:
        marks += "; open dots each seed pair (results/cka_pairs.csv)"
    section.blocks.append(
        ctx.figure(
            plot_cka_layers(cka, ctx.targets, order, labels, pairs),
            "cka_layers",
            f"CKA per layer (input to output{ordered}) for each pair of models; {marks}. Each "
            "panel's y axis is scaled to its values with a margin (it does not span 0 to 1), "
            "so differences near 1 stay visible.",
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
            "CKA between every layer of the pair's first models (rows) and of its second "
            "(columns), the mean over seed pairs; one row of panels per target.",
        )
    )


def _fill_distance(ctx: SectionContext, section: Section) -> None:
    distance = ctx.results.tables["distance"]
    whole = distance[distance["module"] == "all"]
    targets = ctx.targets_in(whole)
    seeds = has_seed_intervals(distance, "l2")
    interval = f" [{SEED_PAIRS}; none with one seed pair]" if seeds else ""
    if targets:
        means = l2_means(whole, ["pair", "target"])
        rows = [
            [pair] + [l2_cell(means, (pair, t), 1) for t in targets] for pair in pair_order(whole)
        ]
        section.blocks.append(
            TableBlock(
                f"l2 distance of the whole network (mean over seed pairs){interval}.",
                ["pair", *targets],
                rows,
            )
        )
    if (distance["module"] != "all").any():
        bars = f" Error bars: the {SEED_PAIRS}." if seeds else ""
        section.blocks.append(
            ctx.figure(
                plot_distance_modules(distance, ctx.targets, ctx.unit_order(), ctx.unit_stages()),
                "distance_modules",
                "l2 distance per unit, from the input side of the network (left) to the "
                f"output; stages are named along the top where they hold several units.{bars}",
            )
        )
    stages = ctx.results.get("distance_stages")
    if stages is not None:
        _add_stages(ctx, section, stages)


def _add_stages(ctx: SectionContext, section: Section, stages: pd.DataFrame) -> None:
    """Distance per stage: the figure and its table (n/a: a unit of the stage was left
    out, e.g. the head, which P and P-T do not share)."""
    order = ctx.units.stage_names if ctx.units and ctx.units.from_map else None
    seeds = has_seed_intervals(stages, "l2")
    bars = f" Error bars: the {SEED_PAIRS}." if seeds else ""
    section.blocks.append(
        ctx.figure(
            plot_distance_stages(stages, ctx.targets, order),
            "distance_stages",
            "l2 distance per stage: the square root of the sum of its units' squared l2 "
            f"distances (no point where a unit of the stage is not shared by the pair).{bars}",
        )
    )
    names = [n for n in order or dict.fromkeys(stages["stage"]) if n in set(stages["stage"])]
    means = l2_means(stages, ["target", "pair", "stage"])
    rows = [
        [target, pair, *[l2_cell(means, (target, pair, name), 2) for name in names]]
        for target in ctx.targets_in(stages)
        for pair in pair_order(stages[stages["target"] == target])
    ]
    interval = f" [{SEED_PAIRS}]" if seeds else ""
    section.blocks.append(
        TableBlock(
            f"l2 distance per stage (mean over seed pairs{interval}; n/a: a unit was left out).",
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
                interpolation_caption(interpolation),
            )
        )
    else:
        section.missing_note("interpolation", "the interpolation curve")
    if barriers is None:
        section.missing_note("barriers", "the barrier table")
        return
    if "align" in barriers.columns:
        section.blocks.append(_aligned_barrier_table(ctx, barriers))
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


ALIGN_LABELS = {"none": "as trained", "weights": "weights", "activations": "activations"}


def _alignment_label(align: object, repair: object) -> str:
    """``as trained``, ``weights``, ``weights + REPAIR`` (``repair`` as read from the CSV)."""
    label = ALIGN_LABELS.get(str(align), str(align))
    return f"{label} + REPAIR" if str(repair).lower() == "true" else label


def _metric_bracket(low: object, high: object, task: str) -> str:
    """A metric interval on the scale of :func:`format_metric_difference` (points for
    accuracy, a fraction for ROC-AUC)."""
    scale, digits = (1.0, 3) if task == "multilabel" else (100.0, 1)
    if is_missing(low) or is_missing(high):
        return "n/a"
    return format_bracket(float(low) * scale, float(high) * scale, digits)


def _cell(row: pd.Series, column: str) -> object:
    return row[column] if column in row.index else None


def _aligned_barrier_table(ctx: SectionContext, barriers: pd.DataFrame) -> TableBlock:
    """One row per target, pair kind and setting: each barrier (mean over seed pairs)
    with its test-set interval and its interval across seed pairs, and ``n_pairs``."""
    order = {name: index for index, name in enumerate(("none", "weights", "activations"))}
    rows = []
    for target in ctx.targets:
        chosen = barriers[barriers["target"] == target]
        task = ctx.tasks[target]
        for pair in pair_order(chosen):
            settings = chosen[chosen["pair"] == pair]
            settings = settings.assign(
                _order=settings["align"].map(lambda a: order.get(str(a), len(order))),
                _repair=settings["repair"].astype(str).str.lower() == "true",
            ).sort_values(["_repair", "_order"], kind="stable")
            for _, row in settings.iterrows():
                n_pairs = _cell(row, "n_pairs")
                rows.append(
                    [
                        target,
                        pair,
                        _alignment_label(row["align"], row["repair"]),
                        format_interval(
                            row["loss_barrier"],
                            _cell(row, "loss_barrier_low"),
                            _cell(row, "loss_barrier_high"),
                            3,
                        ),
                        format_bracket(
                            _cell(row, "loss_barrier_seeds_low"),
                            _cell(row, "loss_barrier_seeds_high"),
                            3,
                        ),
                        format_metric_difference(row["metric_barrier"], task)
                        + " "
                        + _metric_bracket(
                            _cell(row, "metric_barrier_low"),
                            _cell(row, "metric_barrier_high"),
                            task,
                        ),
                        _metric_bracket(
                            _cell(row, "metric_barrier_seeds_low"),
                            _cell(row, "metric_barrier_seeds_high"),
                            task,
                        ),
                        "n/a" if is_missing(n_pairs) else str(int(n_pairs)),
                    ]
                )
    return TableBlock(
        "Barriers, mean over seed pairs, per alignment of the second model's units to the "
        "first's (as trained; weight or activation matching; + REPAIR: each unit of the "
        "interpolated network rescaled to the interpolated statistics). Brackets: the "
        "95% bootstrap interval over the test set, then the 95% t-interval across seed "
        "pairs (n/a: too few seeds to measure a spread).",
        ["target", "pair", "alignment", "loss barrier [test set]", "across seed pairs",
         "metric barrier [test set]", "across seed pairs", "seed pairs"],
        rows,
    )  # fmt: skip


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
    "pooled features); brackets are intervals, and where the study measured them, the "
    "interval across seed pairs and a permutation p-value (below). Then CKA between every "
    "pair of layers.",
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
