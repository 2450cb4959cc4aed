"""Figures of module criticality: rewinding each unit (Fig. 5), its criticality, and one
unit's test metric over (distance from its init, noise sigma) (Fig. 6).

Units are drawn in the order the caller gives (model order, input side first). The
heatmap draws the mean where a table has several rows for one point (several seeds);
the criticality and rewinding figures draw every seed with its interval.
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


def criticality_scale(values: np.ndarray) -> np.ndarray:
    """``log10(1 + criticality)``: the scale the finding uses; 0 stays 0, ``inf`` stays ``inf``."""
    return np.log10(1.0 + np.asarray(values, dtype=np.float64))


def _draw_seed_points(axes, rows: pd.DataFrame, position: dict, offset: float, init: str) -> None:
    """One point per seed with its evaluation-set interval (``criticality_low/high``);
    a bound at ``inf`` is drawn to the panel's top with a caret; with several seeds, the
    mean over seeds (a diamond) with its t-interval across seeds."""
    from transferlens.analysis.seed_stats import seed_estimate

    seeds = sorted(rows["seed"].unique()) if "seed" in rows.columns else [None]
    bounds = "criticality_low" in rows.columns
    for number, seed in enumerate(seeds):
        one = rows if seed is None else rows[rows["seed"] == seed]
        one = one[one["module"].isin(position)]
        x = one["module"].map(position).to_numpy(float) + offset
        x = x + 0.07 * (number - (len(seeds) - 1) / 2)
        y = criticality_scale(one["criticality"].to_numpy(float))
        label = INIT_LABELS[init] if number == 0 else None
        axes.plot(x, y, "o", markersize=3.5, color=color_of(init), label=label)
        if not bounds:
            continue
        low = criticality_scale(one["criticality_low"].to_numpy(float))
        high = criticality_scale(one["criticality_high"].to_numpy(float))
        for xi, lo, hi in zip(x, low, high):
            if not np.isfinite(lo):
                continue
            top = hi if np.isfinite(hi) else axes.get_ylim()[1]
            axes.plot([xi, xi], [lo, top], color=color_of(init), linewidth=0.9)
            if not np.isfinite(hi):
                axes.plot([xi], [top], "^", markersize=4, color=color_of(init))
    if len(seeds) < 2:
        return
    for module, group in rows.groupby("module"):
        if module not in position:
            continue
        estimate = seed_estimate(criticality_scale(group["criticality"].to_numpy(float)))
        if estimate.arms < 2:
            continue
        low, high = estimate.interval()
        x = position[module] + offset + 0.07 * (len(seeds) + 1) / 2
        axes.errorbar([x], [estimate.value], yerr=[[estimate.value - low], [high - estimate.value]],
                      fmt="D", markersize=4, color=color_of(init), mfc="white", capsize=3,
                      elinewidth=1.4)  # fmt: skip


def plot_criticality(
    criticality: pd.DataFrame,
    targets: list[str],
    order: Sequence[str] | None = None,
    stage_of: Mapping[str, str | None] | None = None,
) -> Figure:
    """Module criticality per unit (in ``order``), P-T vs RI-T, per target, on the
    finding's scale ``log10(1 + criticality)``: one point per seed with its 95% bootstrap
    interval over the training examples searched (``criticality_low/high``; a caret at
    the top: unbounded above); with several seeds a hollow diamond, the mean over seeds
    with its 95% t-interval across seeds. ``stage_of`` names each unit's stage along the
    top. A unit the grid did not resolve has no point: a cross in its model's colour at
    the panel's bottom, and the words "not resolved" in the legend."""
    shown = shown_targets(criticality, targets)
    rows_all = criticality
    count = rows_all["module"].nunique()
    figure, panels = panel_grid(len(shown), columns=2, width=grid_width(count, 6.0), height=3.4)
    for axes, target in zip(panels, shown):
        rows = rows_all[rows_all["target"] == target]
        modules = ordered_names(rows["module"], order)
        stages = [stage_of.get(m) for m in modules] if stage_of else None
        ylabel = "log10(1 + criticality)"
        finite = criticality_scale(rows["criticality"].to_numpy(float))
        finite = finite[np.isfinite(finite)]
        bounded = rows.get("criticality_high", pd.Series(dtype=float)).to_numpy(float)
        bounded = criticality_scale(bounded[np.isfinite(bounded)])
        top = max(np.concatenate([finite, bounded, [1.0]]).max() * 1.15, 1.0)
        axes.set_ylim(-0.05 * top, top)
        position = {m: i for i, m in enumerate(modules)}
        for offset, init in ((-0.18, "PT"), (0.18, "RIT")):
            chosen = rows[rows["init"] == init]
            if chosen.empty:
                continue
            chosen = chosen[~chosen["module"].isin(unresolved_units(rows, init))]
            _draw_seed_points(axes, chosen, position, offset, init)
        for init in ("PT", "RIT"):
            missing = [modules.index(m) for m in unresolved_units(rows, init) if m in modules]
            if missing:
                axes.plot(missing, [0.02] * len(missing), linestyle="none", marker="x",
                          color=color_of(init), transform=axes.get_xaxis_transform(),
                          label=f"{INIT_LABELS[init]}: {UNRESOLVED}")  # fmt: skip
        unit_panel(axes, target, modules, ylabel, [], stages=stages)
        axes.set_ylim(-0.05 * top, top)
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
