"""Figures of the analyses: kappa, CKA (per layer and layer by layer), parameter distances,
interpolation (Fig. 4), rewinding (Fig. 5), criticality and the conv1 picture (Fig. 6).

Where a table has several rows for one point (several seed pairs), the mean is drawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from transferlens.report.figures import (
    INIT_LABELS,
    color_of,
    legend_outside,
    panel_grid,
    style_axes,
)
from transferlens.report.formatting import format_metric_difference, metric_axis_label, metric_scale
from transferlens.report.seed_pairs import model_names, pair_order

_HEATMAP = "viridis"


def _shown(frame: pd.DataFrame, targets: list[str]) -> list[str]:
    return [target for target in targets if (frame["target"] == target).any()]


def plot_kappa(mistakes: pd.DataFrame, targets: list[str]) -> Figure:
    """Cohen's kappa of each pair's correct/incorrect vectors with its interval, per target."""
    shown = _shown(mistakes, targets)
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


def plot_cka_layers(cka: pd.DataFrame, targets: list[str]) -> Figure:
    """CKA of the same layer in two models, per layer and pair (Table 1 as lines), with bands.

    Each panel's y axis spans its values (intervals included) with a margin, not 0 to 1,
    so that differences near 1 stay visible; the caption says so.
    """
    shown = _shown(cka, targets)
    figure, panels = panel_grid(len(shown))
    for axes, target in zip(panels, shown):
        rows = cka[cka["target"] == target]
        layers = list(dict.fromkeys(rows["layer"]))
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
        axes.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
        limits = data_limits(rows[["cka", "cka_low", "cka_high"]].to_numpy(float))
        if limits is not None:
            axes.set_ylim(*limits)
        axes.set_title(target)
        axes.set_xlabel("layer")
        axes.set_ylabel("linear CKA")
        style_axes(axes)
        legend_outside(axes)
    return figure


def plot_cka_matrices(matrix: pd.DataFrame, targets: list[str]) -> Figure:
    """Layer-by-layer CKA heatmaps: one row per target, one panel per pair, one colour bar.

    Rows of a panel are the layers of the pair's first model, columns the second's.
    """
    shown = _shown(matrix, targets)
    pairs = pair_order(matrix)
    figure, panels = panel_grid(len(shown) * len(pairs), columns=len(pairs), width=2.9, height=2.8)
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
            layers_a = list(dict.fromkeys(pair_rows["layer_a"]))
            layers_b = list(dict.fromkeys(pair_rows["layer_b"]))
            grid = pair_rows.pivot_table(index="layer_a", columns="layer_b", values="cka")
            grid = grid.reindex(index=layers_a, columns=layers_b)
            image = axes.imshow(grid.to_numpy(float), vmin=0, vmax=1, cmap=_HEATMAP, origin="lower")
            axes.set_xticks(range(len(layers_b)), layers_b, rotation=45, ha="right", fontsize=7)
            axes.set_yticks(range(len(layers_a)), layers_a, fontsize=7)
    if image is not None:
        figure.colorbar(image, ax=panels, label="linear CKA (0 to 1)", shrink=0.6)
    return figure


def _module_panel(
    axes: Axes,
    target: str,
    modules: list[str],
    ylabel: str,
    lines: list[tuple[str, str, pd.Series]],
) -> None:
    """One panel of a quantity per module (bottom of the network left): a line per
    ``(label, colour, value by module)``."""
    for label, color, values in lines:
        axes.plot(
            range(len(modules)), values.reindex(modules).to_numpy(float), marker="o",
            markersize=3, color=color, label=label,
        )  # fmt: skip
    axes.set_xticks(range(len(modules)), modules, rotation=60, ha="right", fontsize=7)
    axes.set_title(target)
    axes.set_xlabel("module")
    axes.set_ylabel(ylabel)
    style_axes(axes)
    legend_outside(axes)


def plot_distance_modules(distance: pd.DataFrame, targets: list[str]) -> Figure:
    """l2 distance per module (bottom to top of the network) for each pair, per target."""
    per_module = distance[distance["module"] != "all"]
    shown = _shown(per_module, targets)
    figure, panels = panel_grid(len(shown), columns=2, width=6.0, height=3.4)
    for axes, target in zip(panels, shown):
        rows = per_module[per_module["target"] == target]
        lines = [
            (
                pair,
                color_of(pair, position),
                rows[rows["pair"] == pair].groupby("module")["l2"].mean(),
            )
            for position, pair in enumerate(pair_order(rows))
        ]
        modules = list(dict.fromkeys(rows["module"]))
        _module_panel(axes, target, modules, "l2 distance of parameters", lines)
    return figure


def plot_interpolation(
    interpolation: pd.DataFrame,
    barriers: pd.DataFrame | None,
    targets: list[str],
    tasks: dict[str, str],
) -> Figure:
    """Fig. 4: test metric and loss along (1-lam) theta + lam theta', barriers in the legend."""
    shown = _shown(interpolation, targets)
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


def _models(criticality: pd.DataFrame, targets: list[str]) -> list[tuple[str, str]]:
    present = set(zip(criticality["target"], criticality["init"]))
    return [(t, i) for t in targets for i in ("PT", "RIT") if (t, i) in present]


def plot_rewind_heatmap(
    criticality: pd.DataFrame, targets: list[str], tasks: dict[str, str]
) -> Figure:
    """Fig. 5: test metric after rewinding one module to its initial value, modules x models;
    rows without a rewound metric (the ``network`` row of criticality.csv) are left out."""
    models = _models(criticality, targets)
    # Only modules that were rewound: the table's whole-network row ("network") carries
    # the summed criticality and no rewound metric.
    rewound = criticality[criticality["rewind_metric"].notna()]
    modules = list(dict.fromkeys(rewound["module"]))
    all_accuracy = all(tasks[target] != "multilabel" for target, _ in models)
    scale = 100.0 if all_accuracy else 1.0
    grid = np.full((len(modules), len(models)), np.nan)
    for column, (target, init) in enumerate(models):
        rows = criticality[(criticality["target"] == target) & (criticality["init"] == init)]
        values = rows.groupby("module")["rewind_metric"].mean()
        for row, module in enumerate(modules):
            grid[row, column] = values.get(module, np.nan) * scale
    figure = Figure(
        figsize=(max(4.5, 1.1 * len(models) + 3.0), max(3.2, 0.3 * len(modules) + 1.6)),
        dpi=110,
        layout="constrained",
    )
    axes = figure.add_subplot()
    image = axes.imshow(grid, aspect="auto", cmap=_HEATMAP, vmin=0, vmax=scale)
    for (row, column), value in np.ndenumerate(grid):
        if np.isfinite(value):
            text = f"{value:.0f}" if all_accuracy else f"{value:.2f}"
            shade = "white" if value < 0.6 * scale else "black"
            axes.text(column, row, text, ha="center", va="center", fontsize=7, color=shade)
    axes.set_xticks(range(len(models)), [f"{t}\n{INIT_LABELS[i]}" for t, i in models], fontsize=8)
    axes.set_yticks(range(len(modules)), modules, fontsize=7)
    axes.set_xlabel("model (target, initialisation)")
    axes.set_ylabel("module rewound to its initial value")
    label = "test accuracy after rewinding (%)" if all_accuracy else "test metric after rewinding"
    figure.colorbar(image, ax=axes, label=label)
    return figure


def plot_criticality(criticality: pd.DataFrame, targets: list[str]) -> Figure:
    """Module criticality mu_i per module, P-T vs RI-T, per target (log scale when positive)."""
    shown = _shown(criticality, targets)
    figure, panels = panel_grid(len(shown), columns=2, width=6.0, height=3.4)
    for axes, target in zip(panels, shown):
        rows = criticality[criticality["target"] == target]
        lines = []
        for init in ("PT", "RIT"):
            values = rows[rows["init"] == init].groupby("module")["criticality"].mean()
            if not values.empty:
                lines.append((INIT_LABELS[init], color_of(init), values))
        modules = list(dict.fromkeys(rows["module"]))
        _module_panel(axes, target, modules, "criticality (alpha^2 ||delta||^2 / sigma^2)", lines)
        finite = rows["criticality"].to_numpy(float)
        finite = finite[np.isfinite(finite)]
        if finite.size and (finite > 0).all():
            axes.set_yscale("log")
    return figure


def plot_conv1_paths(paths: pd.DataFrame, targets: list[str], tasks: dict[str, str]) -> Figure:
    """Fig. 6: conv1's test metric over (distance from its initial value, noise sigma), for the
    direct path and the path of training checkpoints; one row per target, one colour bar each."""
    path_names = list(dict.fromkeys(paths["path"]))
    shown = _shown(paths, targets)
    columns = [(init, path) for init in ("PT", "RIT") for path in path_names]
    figure, panels = panel_grid(
        len(shown) * len(columns), columns=len(columns), width=3.3, height=2.9
    )
    for row, target in enumerate(shown):
        scale = metric_scale(tasks[target])
        row_axes, image = panels[row * len(columns) : (row + 1) * len(columns)], None
        for axes, (init, path) in zip(row_axes, columns):
            rows = paths[
                (paths["target"] == target) & (paths["init"] == init) & (paths["path"] == path)
            ]
            axes.set_title(f"{target} {INIT_LABELS[init]}: {path} path", fontsize=9)
            axes.set_xlabel("l2 distance of conv1 from its init", fontsize=8)
            axes.set_ylabel("noise sigma", fontsize=8)
            if rows.empty:
                axes.text(0.5, 0.5, "not run", ha="center", va="center", transform=axes.transAxes)
                continue
            grid = rows.pivot_table(index="sigma", columns="distance", values="metric")
            grid = grid.sort_index().sort_index(axis=1) * scale
            x, y = grid.columns.to_numpy(float), grid.index.to_numpy(float)
            image = axes.pcolormesh(
                x, y, grid.to_numpy(float), shading="nearest", cmap=_HEATMAP, vmin=0, vmax=scale
            )
            axes.set_yticks(y, [f"{sigma:g}" for sigma in y])  # exactly the noise levels run
        if image is not None:
            figure.colorbar(image, ax=row_axes, label=metric_axis_label(tasks[target]), shrink=0.9)
    return figure
