"""Figures of module criticality: rewinding each unit (Fig. 5), its criticality, and one
unit's test metric over (distance from its init, noise sigma) (Fig. 6).

Units are drawn in the order the caller gives (model order, input side first); where a
table has several rows for one point (several seeds), the mean is drawn.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from transferlens.report.figures import INIT_LABELS, color_of, grid_width, name_ticks, panel_grid
from transferlens.report.figures_analysis import (
    HEATMAP,
    ordered_names,
    shown_targets,
    unit_panel,
)
from transferlens.report.formatting import metric_axis_label, metric_scale


def _models(criticality: pd.DataFrame, targets: list[str]) -> list[tuple[str, str]]:
    present = set(zip(criticality["target"], criticality["init"]))
    return [(t, i) for t in targets for i in ("PT", "RIT") if (t, i) in present]


def plot_rewind_heatmap(
    criticality: pd.DataFrame,
    targets: list[str],
    tasks: dict[str, str],
    order: Sequence[str] | None = None,
    lower: Collection[str] = (),
) -> Figure:
    """Fig. 5: test metric after rewinding one unit to its initial value, units x models;
    units in ``order`` (default the table's), the ``lower`` ones in bold; rows without a
    rewound metric (the ``network`` row of criticality.csv) are left out."""
    models = _models(criticality, targets)
    # Only modules that were rewound: the table's whole-network row ("network") carries
    # the summed criticality and no rewound metric.
    rewound = criticality[criticality["rewind_metric"].notna()]
    modules = ordered_names(rewound["module"], order)
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
    image = axes.imshow(grid, aspect="auto", cmap=HEATMAP, vmin=0, vmax=scale)
    for (row, column), value in np.ndenumerate(grid):
        if np.isfinite(value):
            text = f"{value:.0f}" if all_accuracy else f"{value:.2f}"
            shade = "white" if value < 0.6 * scale else "black"
            axes.text(column, row, text, ha="center", va="center", fontsize=7, color=shade)
    axes.set_xticks(range(len(models)), [f"{t}\n{INIT_LABELS[i]}" for t, i in models], fontsize=8)
    name_ticks(axes, modules, axis="y")
    for label, module in zip(axes.get_yticklabels(), modules):
        if module in lower:
            label.set_fontweight("bold")
    axes.set_xlabel("model (target, initialisation)")
    axes.set_ylabel("module rewound to its initial value")
    label = "test accuracy after rewinding (%)" if all_accuracy else "test metric after rewinding"
    figure.colorbar(image, ax=axes, label=label)
    return figure


UNRESOLVED = "not resolved"  # the word the figures and tables put where no number is


def unresolved_units(rows: pd.DataFrame, init: str) -> list[str]:
    """Units of ``rows`` (one target) whose criticality ``init``'s grid did not resolve
    (``resolved`` False in any of its rows; tables without the column: none)."""
    if "resolved" not in rows.columns:
        return []
    chosen = rows[(rows["init"] == init) & ~rows["resolved"].astype(bool)]
    return list(dict.fromkeys(chosen["module"]))


def plot_criticality(
    criticality: pd.DataFrame,
    targets: list[str],
    order: Sequence[str] | None = None,
    stage_of: Mapping[str, str | None] | None = None,
) -> Figure:
    """Module criticality mu_i per unit (in ``order``), P-T vs RI-T, per target (log scale
    when positive); ``stage_of`` names each unit's stage along the top. A unit the grid
    did not resolve has no point: a cross in its model's colour at the panel's bottom,
    and the words "not resolved" in the legend."""
    shown = shown_targets(criticality, targets)
    rows_all = criticality
    count = rows_all["module"].nunique()
    figure, panels = panel_grid(len(shown), columns=2, width=grid_width(count, 6.0), height=3.4)
    for axes, target in zip(panels, shown):
        rows = rows_all[rows_all["target"] == target]
        lines = []
        for init in ("PT", "RIT"):
            values = rows[rows["init"] == init].groupby("module")["criticality"].mean()
            values = values.where(~values.index.isin(unresolved_units(rows, init)))
            if not values.empty:
                lines.append((INIT_LABELS[init], color_of(init), values))
        modules = ordered_names(rows["module"], order)
        stages = [stage_of.get(m) for m in modules] if stage_of else None
        ylabel = "criticality (alpha^2 ||delta||^2 / sigma^2)"
        finite = np.concatenate([v.to_numpy(float) for _, _, v in lines]) if lines else []
        finite = np.asarray(finite)[np.isfinite(finite)]
        if finite.size and (finite > 0).all():
            axes.set_yscale("log")
        for init in ("PT", "RIT"):
            missing = [modules.index(m) for m in unresolved_units(rows, init) if m in modules]
            if missing:
                axes.plot(missing, [0.02] * len(missing), linestyle="none", marker="x",
                          color=color_of(init), transform=axes.get_xaxis_transform(),
                          label=f"{INIT_LABELS[init]}: {UNRESOLVED}")  # fmt: skip
        unit_panel(axes, target, modules, ylabel, lines, stages=stages)
        if not finite.size:
            axes.text(0.5, 0.5, f"{UNRESOLVED} by the grid", ha="center", va="center",
                      transform=axes.transAxes)  # fmt: skip
    return figure


def plot_rewinding_seeds(
    rewinding: pd.DataFrame,
    targets: list[str],
    tasks: dict[str, str],
    order: Sequence[str] | None = None,
) -> Figure:
    """Test metric after rewinding each unit, one point per seed with its bootstrap
    interval over the test set (rewinding.csv), P-T and RI-T side by side, per target."""
    shown = shown_targets(rewinding, targets)
    count = rewinding["module"].nunique()
    figure, panels = panel_grid(len(shown), columns=2, width=grid_width(count, 6.0), height=3.4)
    for axes, target in zip(panels, shown):
        rows = rewinding[rewinding["target"] == target]
        modules = ordered_names(rows["module"], order)
        scale = metric_scale(tasks[target])
        position = {m: i for i, m in enumerate(modules)}
        for offset, init in ((-0.15, "PT"), (0.15, "RIT")):
            chosen = rows[rows["init"] == init]
            seeds = sorted(chosen["seed"].unique())
            for number, seed in enumerate(seeds):
                one = chosen[chosen["seed"] == seed]
                x = one["module"].map(position).to_numpy(float) + offset
                x = x + 0.06 * (number - (len(seeds) - 1) / 2)
                y = one["rewind_metric"].to_numpy(float) * scale
                low = one["rewind_metric_low"].to_numpy(float) * scale
                high = one["rewind_metric_high"].to_numpy(float) * scale
                label = INIT_LABELS[init] if number == 0 else None
                axes.errorbar(x, y, yerr=[np.maximum(y - low, 0), np.maximum(high - y, 0)],
                              fmt="o", markersize=3, color=color_of(init), capsize=2,
                              elinewidth=0.8, label=label)  # fmt: skip
        name_ticks(axes, modules)
        axes.set_title(target)
        axes.set_xlabel("module rewound to its initial value")
        axes.set_ylabel(metric_axis_label(tasks[target]))
        axes.legend(fontsize=7)
    return figure


def plot_unit_paths(
    paths: pd.DataFrame, targets: list[str], tasks: dict[str, str], unit: str
) -> Figure:
    """Fig. 6: ``unit``'s test metric over (distance from its initial value, noise sigma),
    for the direct path and the path of training checkpoints; one row per target, one
    colour bar each."""
    path_names = list(dict.fromkeys(paths["path"]))
    shown = shown_targets(paths, targets)
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
            axes.set_xlabel(f"l2 distance of {unit} from its init", fontsize=8)
            axes.set_ylabel("noise sigma", fontsize=8)
            if rows.empty:
                axes.text(0.5, 0.5, "not run", ha="center", va="center", transform=axes.transAxes)
                continue
            grid = rows.pivot_table(index="sigma", columns="distance", values="metric")
            grid = grid.sort_index().sort_index(axis=1) * scale
            x, y = grid.columns.to_numpy(float), grid.index.to_numpy(float)
            image = axes.pcolormesh(
                x, y, grid.to_numpy(float), shading="nearest", cmap=HEATMAP, vmin=0, vmax=scale
            )
            axes.set_yticks(y, [f"{sigma:g}" for sigma in y])  # exactly the noise levels run
        if image is not None:
            figure.colorbar(image, ax=row_axes, label=metric_axis_label(tasks[target]), shrink=0.9)
    return figure
