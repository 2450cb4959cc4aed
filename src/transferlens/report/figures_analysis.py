"""Figures of the analyses between models: kappa, CKA (per layer and layer by layer) and
parameter distances (per unit and per stage); interpolation (Fig. 4) is
:mod:`transferlens.report.figures_interpolation`, rewinding and criticality
:mod:`transferlens.report.figures_criticality`.

Where a table has several rows for one point (several seed pairs), the mean is drawn.
Layers and units are drawn in the order the caller gives (model order: by depth when
``results/`` records it), labelled as the caller says. Intervals come from the tables,
never from the figure: ``<stat>_low/_high`` over the test images (bootstrap) and, where
present, ``<stat>_seeds_low/_high``, the 95% t-interval across seed pairs (the
delete-one-run jackknife of :func:`transferlens.analysis.seed_stats.pair_summary`);
per-seed-pair tables (``<table>_pairs.csv``) add one dot per seed pair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from transferlens.report.figures import (
    SEEDS_HIGH,
    SEEDS_LOW,
    color_of,
    draw_interval,
    grid_width,
    has_seed_intervals,
    legend_outside,
    name_ticks,
    panel_grid,
    stage_axis,
    style_axes,
)
from transferlens.report.seed_pairs import model_names, pair_order

HEATMAP = "viridis"


def shown_targets(frame: pd.DataFrame, targets: list[str]) -> list[str]:
    return [target for target in targets if (frame["target"] == target).any()]


def _pair_values(
    pairs: pd.DataFrame | None, target: str, pair: str, value: str, **where: str
) -> np.ndarray:
    """The ``value`` of every seed pair of ``target`` and ``pair`` in a per-seed-pair table
    (``where``: further column = value filters); empty without the table or column."""
    if pairs is None or value not in pairs.columns:
        return np.empty(0)
    chosen = (pairs["target"] == target) & (pairs["pair"] == pair)
    for column, wanted in where.items():
        chosen &= pairs[column] == wanted
    return pd.to_numeric(pairs.loc[chosen, value], errors="coerce").dropna().to_numpy(float)


def _number(row: pd.Series, column: str) -> float:
    """``row[column]`` as a float, NaN when the column is absent or empty."""
    value = row.get(column)
    return float("nan") if value is None or pd.isna(value) else float(value)


KAPPA_KEY = (
    ("bootstrap over test images", {"color": "#333333", "linewidth": 1.0}),
    ("across seed pairs (jackknife)", {"color": "#333333", "linewidth": 5, "alpha": 0.25}),
)


def plot_kappa(
    mistakes: pd.DataFrame, targets: list[str], pairs: pd.DataFrame | None = None
) -> Figure:
    """Cohen's kappa of each pair's correct/incorrect vectors per target: the point (mean
    over seed pairs) with its bootstrap interval over test images (thin, capped), the
    95% t-interval across seed pairs when the table has one (``kappa_seeds_low/high``:
    a wide translucent bar), one dot per seed pair from ``pairs``
    (``mistakes_pairs.csv``), and ``kappa_max`` (the largest kappa the two models'
    accuracies allow) as a black bar."""
    shown = shown_targets(mistakes, targets)
    seeds = has_seed_intervals(mistakes, "kappa")
    bounds = "kappa_max" in mistakes.columns and mistakes["kappa_max"].notna().any()
    dots = pairs is not None and "kappa" in pairs.columns
    figure, panels = panel_grid(
        len(shown), width=4.8 if seeds or bounds or dots else 4.0, height=3.0
    )
    for axes, target in zip(panels, shown):
        rows = mistakes[mistakes["target"] == target]
        names = pair_order(rows)
        for position, pair in enumerate(names):
            pair_rows = rows[rows["pair"] == pair].reset_index(drop=True)
            color = color_of(pair, position)
            for jitter, row in pair_rows.iterrows():
                x = position + 0.12 * (jitter - (len(pair_rows) - 1) / 2)
                kappa = np.array([_number(row, "kappa")])
                draw_interval(
                    axes, np.array([x]), kappa, np.array([_number(row, "kappa_seeds_low")]),
                    np.array([_number(row, "kappa_seeds_high")]), ecolor=color, elinewidth=6,
                    alpha=0.3,
                )  # fmt: skip
                error = None
                if pd.notna(row["kappa_low"]) and pd.notna(row["kappa_high"]):
                    error = [[row["kappa"] - row["kappa_low"]], [row["kappa_high"] - row["kappa"]]]
                axes.errorbar([x], [row["kappa"]], yerr=error, fmt="o", color=color, capsize=3)
                if np.isfinite(_number(row, "kappa_max")):
                    axes.plot([x], [row["kappa_max"]], marker="_", markersize=14, color="black",
                              markeredgewidth=1.6, gid="kappa_max")  # fmt: skip
            values = _pair_values(pairs, target, pair, "kappa")
            if values.size:
                axes.scatter(
                    np.full(values.size, position + 0.22), values, s=10, color="white",
                    edgecolors=color, linewidths=0.8, zorder=3,
                )  # fmt: skip
        axes.set_xticks(range(len(names)), names)
        axes.set_xlim(-0.6, len(names) - 0.4)
        axes.set_title(target)
        axes.set_xlabel("pair of models")
        axes.set_ylabel("Cohen's kappa (error consistency)")
        style_axes(axes)
    if panels and (seeds or bounds or dots):  # one key for all panels, beside the last
        _kappa_legend(panels[-1], seeds, bounds, dots)
    return figure


def _kappa_legend(axes: Axes, seeds: bool, bounds: bool, dots: bool) -> None:
    """A key to the marks: which interval is which, the bound and the seed-pair dots."""
    handles = [Line2D([], [], label=KAPPA_KEY[0][0], **KAPPA_KEY[0][1])]
    if seeds:
        handles.append(Line2D([], [], label=KAPPA_KEY[1][0], **KAPPA_KEY[1][1]))
    if bounds:
        handles.append(
            Line2D([], [], color="black", marker="_", markersize=12, markeredgewidth=1.6,
                   linestyle="none", label="kappa_max (from accuracies)")
        )  # fmt: skip
    if dots:
        handles.append(
            Line2D([], [], marker="o", markersize=4, color="white", markeredgecolor="#333333",
                   linestyle="none", label="one seed pair")
        )  # fmt: skip
    axes.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
        fontsize=7, frameon=False,
    )  # fmt: skip


def data_limits(values: np.ndarray, margin: float = 0.08) -> tuple[float, float] | None:
    """Axis limits that span the finite ``values`` plus ``margin`` of their range on each
    side (at least 0.01, so a flat line is not at the edge); None when none is finite."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    pad = max(margin * (high - low), 0.01)
    return low - pad, high + pad


def ordered_names(names: pd.Series, order: Sequence[str] | None) -> list[str]:
    """The distinct ``names`` in ``order`` (those it lacks after, as they appear)."""
    present = list(dict.fromkeys(str(name) for name in names.dropna()))
    if order is None:
        return present
    return [n for n in order if n in present] + [n for n in present if n not in order]


def plot_cka_layers(
    cka: pd.DataFrame,
    targets: list[str],
    order: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    pairs: pd.DataFrame | None = None,
) -> Figure:
    """CKA of the same layer in two models, per layer and pair (Table 1 as lines), with bands.

    Layers in ``order`` (default: the table's), ticked with ``labels`` (e.g. their stage).
    Bands: the bootstrap interval over test images (``cka_low/high``); error bars: the
    95% t-interval across seed pairs where the table has one (``cka_seeds_low/high``);
    dots: each seed pair of ``pairs`` (``cka_pairs.csv``). Each panel's y axis spans its
    values, bands and dots (clipped to CKA's range [0, 1]) with a margin, not 0 to 1,
    so that differences near 1 stay visible; an interval across seed pairs may run past
    it (the table prints its bounds). The caption says so.
    """
    shown = shown_targets(cka, targets)
    count = cka["layer"].nunique()
    seeds = has_seed_intervals(cka, "cka")
    spans = ["cka", "cka_low", "cka_high"] + (["cka_seeds_low", "cka_seeds_high"] if seeds else [])
    figure, panels = panel_grid(len(shown), width=grid_width(count, 5.2))
    for axes, target in zip(panels, shown):
        rows = cka[cka["target"] == target]
        layers = ordered_names(rows["layer"], order)
        names = pair_order(rows)
        # The axis spans the values, bands and dots; an interval across seed pairs (wide
        # with few seeds) may run past it rather than flatten every difference near 1.
        drawn = [rows[["cka", "cka_low", "cka_high"]].to_numpy(float).ravel()]
        for position, pair in enumerate(names):
            table = rows[rows["pair"] == pair].groupby("layer")[spans].mean()
            table = table.reindex(layers)
            x = np.arange(len(layers))
            color = color_of(pair, position)
            axes.plot(x, table["cka"], marker="o", markersize=4, color=color, label=pair)
            if table["cka_low"].notna().any():
                axes.fill_between(x, table["cka_low"], table["cka_high"], color=color, alpha=0.18)
            # Pairs side by side around each layer, so that their bars and dots stay apart.
            shift = 0.07 * (position - (len(names) - 1) / 2)
            if seeds:
                draw_interval(
                    axes, x + shift, table["cka"].to_numpy(float),
                    table["cka" + SEEDS_LOW].to_numpy(float),
                    table["cka" + SEEDS_HIGH].to_numpy(float), ecolor=color, capsize=2,
                    elinewidth=0.9,
                )  # fmt: skip
            for index, layer in enumerate(layers):
                values = _pair_values(pairs, target, pair, "cka", layer=layer)
                if values.size:
                    axes.scatter(
                        np.full(values.size, index + shift + 0.03), values, s=8, color="white",
                        edgecolors=color, linewidths=0.7, zorder=3,
                    )  # fmt: skip
                    drawn.append(values)
        name_ticks(axes, layers, labels=labels)
        limits = data_limits(np.clip(np.concatenate(drawn), 0.0, 1.0))
        if limits is not None:
            axes.set_ylim(*limits)
        axes.set_title(target)
        axes.set_xlabel("layer (input to output)")
        axes.set_ylabel("linear CKA")
        style_axes(axes)
        legend_outside(axes)
    return figure


def plot_cka_matrices(
    matrix: pd.DataFrame, targets: list[str], order: Sequence[str] | None = None
) -> Figure:
    """Layer-by-layer CKA heatmaps: one row per target, one panel per pair, one colour bar.

    Rows of a panel are the layers of the pair's first model, columns the second's, both
    in ``order`` (default: the table's).
    """
    shown = shown_targets(matrix, targets)
    pairs = pair_order(matrix)
    side = max(2.9, 0.2 * matrix["layer_a"].nunique() + 1.6)
    figure, panels = panel_grid(
        len(shown) * len(pairs), columns=len(pairs), width=side, height=side - 0.1
    )
    image = None
    for row, target in enumerate(shown):
        for column, pair in enumerate(pairs):
            axes = panels[row * len(pairs) + column]
            pair_rows = matrix[(matrix["target"] == target) & (matrix["pair"] == pair)]
            axes.set_title(f"{target}: {pair}", fontsize=9)
            first, second = model_names(pair)
            axes.set_ylabel(f"layer of {first} (first)", fontsize=8)
            axes.set_xlabel(f"layer of {second} (second)", fontsize=8)
            if pair_rows.empty:
                axes.text(0.5, 0.5, "not run", ha="center", va="center", transform=axes.transAxes)
                continue
            layers_a = ordered_names(pair_rows["layer_a"], order)
            layers_b = ordered_names(pair_rows["layer_b"], order)
            grid = pair_rows.pivot_table(index="layer_a", columns="layer_b", values="cka")
            grid = grid.reindex(index=layers_a, columns=layers_b)
            image = axes.imshow(grid.to_numpy(float), vmin=0, vmax=1, cmap=HEATMAP, origin="lower")
            name_ticks(axes, layers_b)
            name_ticks(axes, layers_a, axis="y")
    if image is not None:
        figure.colorbar(image, ax=panels, label="linear CKA (0 to 1)", shrink=0.6)
    return figure


def unit_panel(
    axes: Axes,
    target: str,
    names: list[str],
    ylabel: str,
    lines: list[tuple[str, str, pd.Series]],
    *,
    xlabel: str = "module",
    stages: Sequence[str | None] | None = None,
    intervals: Sequence[tuple[pd.Series, pd.Series] | None] | None = None,
) -> None:
    """One panel of a quantity per unit (or stage), input side left: a line per
    ``(label, colour, value by name)``; ``stages`` names each position's stage on top;
    ``intervals`` (one per line, ``(low, high)`` by name or None) adds error bars."""
    for index, (label, color, values) in enumerate(lines):
        x = np.arange(len(names), dtype=float)
        y = values.reindex(names).to_numpy(float)
        axes.plot(x, y, marker="o", markersize=3, color=color, label=label)
        interval = intervals[index] if intervals is not None else None
        if interval is not None:
            shift = 0.06 * (index - (len(lines) - 1) / 2)  # lines side by side: bars apart
            low, high = (bound.reindex(names).to_numpy(float) for bound in interval)
            draw_interval(axes, x + shift, y, low, high, ecolor=color, capsize=2, elinewidth=0.8)
    name_ticks(axes, names)
    if stages is not None:
        stage_axis(axes, stages)
    axes.set_title(target)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    style_axes(axes)
    legend_outside(axes)


def _pair_lines(rows: pd.DataFrame, by: str) -> list[tuple[str, str, pd.Series]]:
    return [
        (pair, color_of(pair, position), rows[rows["pair"] == pair].groupby(by)["l2"].mean())
        for position, pair in enumerate(pair_order(rows))
    ]


def _pair_intervals(rows: pd.DataFrame, by: str) -> list[tuple[pd.Series, pd.Series]] | None:
    """Per pair (as :func:`_pair_lines`): the table's l2 interval across seed pairs by
    ``by``, or None when the table has none (written before the intervals)."""
    if not has_seed_intervals(rows, "l2"):
        return None
    bounds = []
    for pair in pair_order(rows):
        grouped = rows[rows["pair"] == pair].groupby(by)
        bounds.append((grouped["l2" + SEEDS_LOW].mean(), grouped["l2" + SEEDS_HIGH].mean()))
    return bounds


def plot_distance_modules(
    distance: pd.DataFrame,
    targets: list[str],
    order: Sequence[str] | None = None,
    stage_of: Mapping[str, str | None] | None = None,
) -> Figure:
    """l2 distance per unit (input to output, in ``order``; default the table's) for each
    pair, per target, with the table's 95% interval across seed pairs as error bars
    where it has one (``l2_seeds_low/high``); ``stage_of`` names each unit's stage along
    the top."""
    per_module = distance[distance["module"] != "all"]
    shown = shown_targets(per_module, targets)
    count = per_module["module"].nunique()
    figure, panels = panel_grid(len(shown), columns=2, width=grid_width(count, 6.0), height=3.4)
    for axes, target in zip(panels, shown):
        rows = per_module[per_module["target"] == target]
        modules = ordered_names(rows["module"], order)
        stages = [stage_of.get(m) for m in modules] if stage_of else None
        lines, bounds = _pair_lines(rows, "module"), _pair_intervals(rows, "module")
        unit_panel(
            axes, target, modules, "l2 distance of parameters", lines, stages=stages,
            intervals=bounds,
        )  # fmt: skip
    return figure


def plot_distance_stages(
    stages: pd.DataFrame, targets: list[str], order: Sequence[str] | None = None
) -> Figure:
    """l2 distance per stage, sqrt of the sum of its units' squared l2 (input to output,
    in ``order``), for each pair, per target; a stage with a unit left out (the head
    between P and P-T) has no point."""
    shown = shown_targets(stages, targets)
    count = stages["stage"].nunique()
    figure, panels = panel_grid(len(shown), columns=2, width=grid_width(count, 6.0), height=3.4)
    for axes, target in zip(panels, shown):
        rows = stages[stages["target"] == target]
        names = ordered_names(rows["stage"], order)
        lines, bounds = _pair_lines(rows, "stage"), _pair_intervals(rows, "stage")
        unit_panel(
            axes, target, names, "l2 distance of parameters", lines, xlabel="stage",
            intervals=bounds,
        )  # fmt: skip
    return figure
