"""Figures of the analyses between models: kappa, CKA (per layer and layer by layer),
parameter distances (per unit and per stage) and interpolation (Fig. 4); rewinding and
criticality are :mod:`transferlens.report.figures_criticality`.

Where a table has several rows for one point (several seed pairs), the mean is drawn.
Layers and units are drawn in the order the caller gives (model order: by depth when
``results/`` records it), labelled as the caller says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from transferlens.report.figures import (
    color_of,
    grid_width,
    legend_outside,
    name_ticks,
    panel_grid,
    stage_axis,
    style_axes,
)
from transferlens.report.formatting import format_metric_difference, metric_axis_label, metric_scale
from transferlens.report.seed_pairs import model_names, pair_order

HEATMAP = "viridis"


def shown_targets(frame: pd.DataFrame, targets: list[str]) -> list[str]:
    return [target for target in targets if (frame["target"] == target).any()]


def plot_kappa(mistakes: pd.DataFrame, targets: list[str]) -> Figure:
    """Cohen's kappa of each pair's correct/incorrect vectors with its interval, per target."""
    shown = shown_targets(mistakes, targets)
    figure, panels = panel_grid(len(shown), width=4.0, height=3.0)
    for axes, target in zip(panels, shown):
        rows = mistakes[mistakes["target"] == target]
        pairs = pair_order(rows)
        for position, pair in enumerate(pairs):
            pair_rows = rows[rows["pair"] == pair].reset_index(drop=True)
            for jitter, row in pair_rows.iterrows():
                x = position + 0.12 * (jitter - (len(pair_rows) - 1) / 2)
                error = None
                if pd.notna(row["kappa_low"]) and pd.notna(row["kappa_high"]):
                    error = [[row["kappa"] - row["kappa_low"]], [row["kappa_high"] - row["kappa"]]]
                axes.errorbar(
                    [x],
                    [row["kappa"]],
                    yerr=error,
                    fmt="o",
                    color=color_of(pair, position),
                    capsize=3,
                )
        axes.set_xticks(range(len(pairs)), pairs)
        axes.set_xlim(-0.6, len(pairs) - 0.4)
        axes.set_title(target)
        axes.set_xlabel("pair of models")
        axes.set_ylabel("Cohen's kappa (error consistency)")
        style_axes(axes)
    return figure


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
) -> Figure:
    """CKA of the same layer in two models, per layer and pair (Table 1 as lines), with bands.

    Layers in ``order`` (default: the table's), ticked with ``labels`` (e.g. their stage).
    Each panel's y axis spans its values (intervals included) with a margin, not 0 to 1,
    so that differences near 1 stay visible; the caption says so.
    """
    shown = shown_targets(cka, targets)
    count = cka["layer"].nunique()
    figure, panels = panel_grid(len(shown), width=grid_width(count, 5.2))
    for axes, target in zip(panels, shown):
        rows = cka[cka["target"] == target]
        layers = ordered_names(rows["layer"], order)
        for position, pair in enumerate(pair_order(rows)):
            table = (
                rows[rows["pair"] == pair].groupby("layer")[["cka", "cka_low", "cka_high"]].mean()
            )
            table = table.reindex(layers)
            x = np.arange(len(layers))
            color = color_of(pair, position)
            axes.plot(x, table["cka"], marker="o", markersize=4, color=color, label=pair)
            if table["cka_low"].notna().any():
                axes.fill_between(x, table["cka_low"], table["cka_high"], color=color, alpha=0.18)
        name_ticks(axes, layers, labels=labels)
        limits = data_limits(rows[["cka", "cka_low", "cka_high"]].to_numpy(float))
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
) -> None:
    """One panel of a quantity per unit (or stage), input side left: a line per
    ``(label, colour, value by name)``; ``stages`` names each position's stage on top."""
    for label, color, values in lines:
        axes.plot(
            range(len(names)), values.reindex(names).to_numpy(float), marker="o",
            markersize=3, color=color, label=label,
        )  # fmt: skip
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


def plot_distance_modules(
    distance: pd.DataFrame,
    targets: list[str],
    order: Sequence[str] | None = None,
    stage_of: Mapping[str, str | None] | None = None,
) -> Figure:
    """l2 distance per unit (input to output, in ``order``; default the table's) for each
    pair, per target; ``stage_of`` names each unit's stage along the top."""
    per_module = distance[distance["module"] != "all"]
    shown = shown_targets(per_module, targets)
    count = per_module["module"].nunique()
    figure, panels = panel_grid(len(shown), columns=2, width=grid_width(count, 6.0), height=3.4)
    for axes, target in zip(panels, shown):
        rows = per_module[per_module["target"] == target]
        modules = ordered_names(rows["module"], order)
        stages = [stage_of.get(m) for m in modules] if stage_of else None
        lines = _pair_lines(rows, "module")
        unit_panel(axes, target, modules, "l2 distance of parameters", lines, stages=stages)
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
        lines = _pair_lines(rows, "stage")
        unit_panel(axes, target, names, "l2 distance of parameters", lines, xlabel="stage")
    return figure


def plot_interpolation(
    interpolation: pd.DataFrame,
    barriers: pd.DataFrame | None,
    targets: list[str],
    tasks: dict[str, str],
) -> Figure:
    """Fig. 4: test metric and loss along (1-lam) theta + lam theta', barriers in the legend."""
    shown = shown_targets(interpolation, targets)
    figure, panels = panel_grid(2 * len(shown), columns=2, width=6.2, height=3.3)
    for index, target in enumerate(shown):
        rows = interpolation[interpolation["target"] == target]
        task = tasks[target]
        metric_axes, loss_axes = panels[2 * index], panels[2 * index + 1]
        for position, pair in enumerate(pair_order(rows)):
            curve = (
                rows[rows["pair"] == pair].groupby("lam")[["metric", "loss"]].mean().sort_index()
            )
            label = pair
            if barriers is not None:
                found = barriers[(barriers["target"] == target) & (barriers["pair"] == pair)]
                if not found.empty:
                    barrier = format_metric_difference(found["metric_barrier"].mean(), task)
                    label += f" (barrier {barrier})"
            color = color_of(pair, position)
            metric_axes.plot(
                curve.index, curve["metric"] * metric_scale(task), color=color, label=label
            )
            loss_axes.plot(curve.index, curve["loss"], color=color, label=pair)
        metric_axes.set_ylabel(metric_axis_label(task))
        metric_axes.set_title(f"{target}: test metric along the line")
        loss_axes.set_ylabel("test loss")
        loss_axes.set_title(f"{target}: test loss along the line")
        for axes in (metric_axes, loss_axes):
            axes.set_xlabel("interpolation weight lambda (0 = first model, 1 = second)")
            style_axes(axes)
            legend_outside(axes, fontsize=7)
    return figure
