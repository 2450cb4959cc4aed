"""Figures of the training runs: learning curves (Fig. 2), block shuffling (Fig. 3) and
fine-tuning from pre-training checkpoints (Fig. 7), plus the helpers every figure uses.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg
canvas (no global pyplot state, no display needed). Metrics are drawn in the unit
the report prints them in: accuracy in percent, ROC-AUC as a fraction. Where
several seeds exist, lines are their mean and bands span their minimum to maximum;
where a table carries a 95% interval across seeds (``<value>_seeds_low/high``), the
figure draws that interval as error bars, never one it computes itself.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from transferlens.report.formatting import (
    block_label,
    block_sort_key,
    metric_axis_label,
    metric_scale,
)

INIT_LABELS = {"PT": "P-T", "RIT": "RI-T"}
COLORS = {
    "PT": "#1f5fa8",
    "RIT": "#d2601a",
    "PT-PT": "#1f5fa8",
    "PT-RIT": "#7a4fa3",
    "RIT-RIT": "#d2601a",
    "PT-P": "#2a9d5b",
    "RIT-P": "#c43c6e",
}
_FALLBACK_COLORS = ("#4d4d4d", "#8c6d31", "#17becf", "#bcbd22")
DPI = 110


def color_of(name: str, position: int = 0) -> str:
    return COLORS.get(name, _FALLBACK_COLORS[position % len(_FALLBACK_COLORS)])


def panel_grid(
    panels: int, *, columns: int = 3, width: float = 5.2, height: float = 3.3
) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` axes, ``columns`` per row; unused cells are hidden."""
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(width * columns, height * rows), dpi=DPI, layout="constrained")
    axes = [figure.add_subplot(rows, columns, index + 1) for index in range(rows * columns)]
    for extra in axes[panels:]:
        extra.set_visible(False)
    return figure, axes[:panels]


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (white background, so it prints)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def style_axes(axes: Axes) -> None:
    axes.grid(True, color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def legend_outside(axes: Axes, fontsize: float = 8) -> None:
    """The axes' legend to the right of its plotting area, outside it, so it never covers
    a curve or a bar (the figure's constrained layout makes room for it)."""
    axes.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=fontsize,
        frameon=False,
    )  # fmt: skip


def name_ticks(
    axes: Axes,
    names: Sequence[str],
    *,
    axis: str = "x",
    labels: Mapping[str, str] | None = None,
) -> None:
    """Tick ``names`` at positions 0..n-1 (shown as ``labels[name]`` where given), smaller
    and steeper as they grow in number, so that a ViT's 14+ units stay legible."""
    shown = [labels.get(name, name) if labels else name for name in names]
    count = len(names)
    size = 8 if count <= 6 else 7 if count <= 12 else 6
    if axis == "y":
        axes.set_yticks(range(count), shown, fontsize=size)
        return
    rotation = 30 if count <= 6 else 60 if count <= 12 else 90
    axes.set_xticks(
        range(count), shown, rotation=rotation, ha="center" if rotation == 90 else "right",
        rotation_mode="anchor" if rotation < 90 else "default", fontsize=size,
    )  # fmt: skip


def stage_axis(axes: Axes, stages: Sequence[str | None]) -> None:
    """Name the stages of the x positions along the top of ``axes`` and mark where one
    ends, when some stage spans several positions (``stages[i]``: the stage of position
    ``i``, None = unknown); a ResNet's one-unit stages need no second axis."""
    runs: list[tuple[str, int, int]] = []  # (stage, first, last)
    for position, stage in enumerate(stages):
        if stage is None:
            return
        if runs and runs[-1][0] == stage:
            runs[-1] = (stage, runs[-1][1], position)
        else:
            runs.append((stage, position, position))
    if len(runs) == len(stages):
        return
    for _, _, last in runs[:-1]:
        axes.axvline(last + 0.5, color="#bbbbbb", linewidth=0.8, linestyle=":", zorder=0)
    top = axes.secondary_xaxis("top")
    top.set_xticks([(first + last) / 2 for _, first, last in runs], [r[0] for r in runs])
    top.tick_params(axis="x", length=0, labelsize=7, labelcolor="#555555")


def grid_width(count: int, minimum: float) -> float:
    """A panel's width in inches for ``count`` named positions (at least ``minimum``)."""
    return max(minimum, 0.3 * count + 2.0)


def plot_learning_curves(curves: pd.DataFrame, targets: list[str], tasks: dict[str, str]) -> Figure:
    """Fig. 2: test metric vs epoch of P-T and RI-T per target (mean over seeds, min-max band).

    ``curves`` columns: target, init, run_id, epoch, test_metric.
    """
    figure, panels = panel_grid(len(targets))
    for axes, target in zip(panels, targets):
        scale = metric_scale(tasks[target])
        rows = curves[curves["target"] == target]
        for init in ("PT", "RIT"):
            runs = rows[rows["init"] == init]
            if runs.empty:
                continue
            table = runs.pivot_table(index="epoch", columns="run_id", values="test_metric") * scale
            mean = table.mean(axis=1)
            label = f"{INIT_LABELS[init]} ({table.shape[1]} run{'s' if table.shape[1] > 1 else ''})"
            axes.plot(mean.index, mean.values, color=color_of(init), label=label, linewidth=1.8)
            if table.shape[1] > 1:
                axes.fill_between(
                    table.index,
                    table.min(axis=1),
                    table.max(axis=1),
                    color=color_of(init),
                    alpha=0.2,
                )
        axes.set_title(target)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(metric_axis_label(tasks[target]))
        style_axes(axes)
        legend_outside(axes)
    return figure


REUSE_VALUES = ("metric_pt", "metric_rit", "relative_gap", "speed_pt", "speed_rit")
SEEDS_LOW, SEEDS_HIGH = "_seeds_low", "_seeds_high"  # suffixes of an interval across seeds


def seed_interval_columns(frame: pd.DataFrame, values: Sequence[str]) -> list[str]:
    """The ``<value>_seeds_low`` / ``_high`` columns of ``frame`` for ``values`` (absent
    from study folders written before the intervals)."""
    names = [f"{value}{suffix}" for value in values for suffix in (SEEDS_LOW, SEEDS_HIGH)]
    return [name for name in names if name in frame.columns]


def has_seed_intervals(frame: pd.DataFrame | None, value: str) -> bool:
    """Does ``frame`` carry a finite interval across seeds for ``value`` in some row?"""
    low, high = f"{value}{SEEDS_LOW}", f"{value}{SEEDS_HIGH}"
    if frame is None or low not in frame.columns or high not in frame.columns:
        return False
    return bool((frame[low].notna() & frame[high].notna()).any())


def _reuse_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Per block size (index: the size, -1 unshuffled), in the paper's order: the rows'
    means, their min and max (several rows per size: one per seed, in a hand-made table)
    and the mean of each interval column (a study writes one row per size, so this is
    the table's interval)."""
    columns = list(REUSE_VALUES)
    intervals = seed_interval_columns(rows, columns)
    grouped = rows.groupby(rows["block_size"].fillna(-1), sort=False)
    table = (
        grouped[columns].mean()
        .join(grouped[columns].min().add_suffix("_min"))
        .join(grouped[columns].max().add_suffix("_max"))
    )  # fmt: skip
    if intervals:
        table = table.join(grouped[intervals].mean())
    table["block_size"] = [None if key == -1 else int(key) for key in table.index]
    order = sorted(range(len(table)), key=lambda i: block_sort_key(table["block_size"].iloc[i]))
    return table.iloc[order]


def draw_interval(
    axes: Axes, x: np.ndarray, values: np.ndarray, low: np.ndarray, high: np.ndarray, **style
) -> None:
    """Error bars from ``low`` to ``high`` around ``values`` where all three are finite."""
    finite = np.isfinite(values) & np.isfinite(low) & np.isfinite(high)
    if not finite.any():
        return
    spread = np.vstack([values[finite] - low[finite], high[finite] - values[finite]])
    axes.errorbar(x[finite], values[finite], yerr=np.clip(spread, 0, None), fmt="none", **style)


def _bar_interval(
    table: pd.DataFrame, column: str, scale: float, several: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """The bar's error bar: the table's interval across seeds where it has one, else the
    seeds' min to max where several rows share the bar (older tables), else none."""
    if has_seed_intervals(table, column):
        return (
            table[f"{column}{SEEDS_LOW}"].to_numpy(float) * scale,
            table[f"{column}{SEEDS_HIGH}"].to_numpy(float) * scale,
        )
    if several:
        return (
            table[f"{column}_min"].to_numpy(float) * scale,
            table[f"{column}_max"].to_numpy(float) * scale,
        )
    return None


def _paired_bars(
    axes: Axes,
    table: pd.DataFrame,
    columns: tuple[str, str],
    scale: float,
    several: bool,
    seeds: Mapping[str, pd.DataFrame] | None = None,
) -> float:
    """P-T and RI-T bars per block size with their error bars and, from ``seeds`` (init ->
    rows with ``block_key`` and ``value``), one dot per seed; returns the highest point
    drawn (for the axis limit)."""
    positions = np.arange(len(table))
    where = {key: position for position, key in enumerate(table.index)}
    highest = 0.0
    dots_labelled = False
    for offset, column, init in ((-0.2, columns[0], "PT"), (0.2, columns[1], "RIT")):
        values = table[column].to_numpy(float) * scale
        axes.bar(
            positions + offset, values, width=0.4, color=color_of(init), label=INIT_LABELS[init]
        )
        interval = _bar_interval(table, column, scale, several)
        if interval is not None:
            draw_interval(
                axes, positions + offset, values, *interval, ecolor="black", capsize=2,
                elinewidth=0.8,
            )  # fmt: skip
            highest = max(highest, float(np.nanmax(np.append(interval[1], 0.0))))
        points = seeds.get(init) if seeds else None
        if points is not None and not points.empty:
            x = points["block_key"].map(where)
            shown = x.notna()
            label = None if dots_labelled else "one seed's run"
            dot_x = x[shown].to_numpy(float) + offset
            if "low" in points.columns:  # seeds side by side: their bars apart from the bar's
                keys = points["block_key"][shown]
                rank = keys.groupby(keys).cumcount().to_numpy(float)
                count = keys.map(keys.value_counts()).to_numpy(float)
                dot_x = dot_x + 0.08 * (rank - (count - 1) / 2) + 0.06
            dot_values = points["value"][shown].to_numpy(float) * scale
            if "low" in points.columns:  # the run's own bootstrap interval (runs.csv)
                draw_interval(
                    axes, dot_x, dot_values, points["low"][shown].to_numpy(float) * scale,
                    points["high"][shown].to_numpy(float) * scale, ecolor="dimgray",
                    elinewidth=0.6, capsize=0, zorder=2,
                )  # fmt: skip
                reach = points["high"][shown].to_numpy(float) * scale
                if np.isfinite(reach).any():
                    highest = max(highest, float(np.nanmax(reach)))
            axes.scatter(
                dot_x, dot_values, s=9, color="white", edgecolors="black", linewidths=0.6,
                zorder=3, label=label,
            )  # fmt: skip
            dots_labelled = True
            if shown.any():
                highest = max(highest, float(np.nanmax(points["value"][shown]) * scale))
        highest = max(highest, float(np.nanmax(np.append(values, 0.0))))
    axes.set_xticks(positions, [block_label(size) for size in table["block_size"]])
    axes.set_xlabel("block size (pixels; 'pixel' = pixel shuffle, 'none' = unshuffled)")
    return highest


def _seed_points(seeds: pd.DataFrame | None, target: str, column: str) -> dict[str, pd.DataFrame]:
    """init -> rows (``block_key``, ``value`` = ``column``, and ``low``/``high`` from
    ``<column>_low/_high`` where the runs carry their own interval) of ``target``'s runs."""
    if seeds is None or seeds.empty:
        return {}
    rows = seeds[seeds["target"] == target]
    keys = pd.to_numeric(rows["block_size"], errors="coerce").fillna(-1).astype(int)
    frame = pd.DataFrame(
        {"init": rows["init"], "block_key": keys, "value": pd.to_numeric(rows[column])}
    )
    if f"{column}_low" in rows.columns and f"{column}_high" in rows.columns:
        frame["low"] = pd.to_numeric(rows[f"{column}_low"], errors="coerce")
        frame["high"] = pd.to_numeric(rows[f"{column}_high"], errors="coerce")
    return {str(init): group for init, group in frame.groupby("init")}


def plot_reuse(
    reuse: pd.DataFrame,
    targets: list[str],
    tasks: dict[str, str],
    seeds: pd.DataFrame | None = None,
) -> Figure:
    """Fig. 3: per target, final metric of P-T and RI-T per block size with the relative gap
    (percent) printed over each pair, and their optimisation speed.

    Error bars: the table's 95% t-interval across seeds (``<value>_seeds_low/high``)
    where it has one, else the min-max of several rows of one block size. ``seeds``
    (target, init, block_size, final_test_metric, optimization_speed: one row per run
    that the table averages) adds a dot per seed.
    """
    shown = [target for target in targets if (reuse["target"] == target).any()]
    figure, panels = panel_grid(2 * len(shown), columns=2, width=6.0, height=3.4)
    for index, target in enumerate(shown):
        rows = reuse[reuse["target"] == target]
        table = _reuse_means(rows)
        several = bool(rows.groupby(rows["block_size"].fillna(-1)).size().max() > 1)
        scale = metric_scale(tasks[target])
        final_axes, speed_axes = panels[2 * index], panels[2 * index + 1]
        finals = _seed_points(seeds, target, "final_test_metric")
        top = _paired_bars(final_axes, table, ("metric_pt", "metric_rit"), scale, several, finals)
        # The gap is printed above the bars and their error bars.
        reach = [
            "metric_pt",
            "metric_rit",
            *seed_interval_columns(table, ("metric_pt", "metric_rit")),
        ]
        for position, (gap, high) in enumerate(
            zip(table["relative_gap"], table[reach].max(axis=1) * scale)
        ):
            if np.isfinite(gap):
                final_axes.text(position, high + 0.02 * top, f"{gap:.0f}%", ha="center", fontsize=7)
        final_axes.set_ylim(_bar_floor(final_axes), top * 1.15 if top > 0 else 1)
        final_axes.set_title(
            f"{target}: final {metric_axis_label(tasks[target])}; relative gap over bars"
        )
        final_axes.set_ylabel(metric_axis_label(tasks[target]))
        speeds = _seed_points(seeds, target, "optimization_speed")
        _paired_bars(speed_axes, table, ("speed_pt", "speed_rit"), scale, several, speeds)
        speed_axes.set_title(f"{target}: optimisation speed")
        speed_axes.set_ylabel(metric_axis_label(tasks[target], "mean train"))
        for axes in (final_axes, speed_axes):
            style_axes(axes)
            legend_outside(axes)
            axes.tick_params(axis="x", labelsize=8)
    return figure


def _bar_floor(axes: Axes) -> float:
    """0, or below it when an interval reaches under 0 (two seeds give wide intervals)."""
    return min(0.0, axes.get_ylim()[0])


def plot_pretrain_checkpoints(
    table: pd.DataFrame, targets: list[str], tasks: dict[str, str]
) -> Figure:
    """Fig. 7: final test metric and optimisation speed of P-T vs the pre-training epoch it
    started from (mean over seeds), one panel per target: error bars are the table's 95%
    t-interval across seeds (``<value>_seeds_low/high``) where it has one, else a band
    from the min to the max of several rows of one epoch (older tables)."""
    shown = [target for target in targets if (table["target"] == target).any()]
    figure, panels = panel_grid(len(shown))
    for axes, target in zip(panels, shown):
        rows = table[table["target"] == target]
        scale = metric_scale(tasks[target])
        for offset, (column, label, color) in zip(
            (-0.015, 0.015),
            (
                ("final_test_metric", "final test", "#1f5fa8"),
                ("optimization_speed", "optimisation speed (mean train)", "#2a9d5b"),
            ),
        ):
            grouped = rows.groupby("pretrain_epoch")[column]
            mean, low, high = (grouped.agg(f) * scale for f in ("mean", "min", "max"))
            axes.plot(mean.index, mean.values, marker="o", markersize=4, color=color, label=label)
            if has_seed_intervals(rows, column):
                bounds = rows.groupby("pretrain_epoch")[[f"{column}{SEEDS_LOW}",
                                                        f"{column}{SEEDS_HIGH}"]].mean() * scale  # fmt: skip
                # Offset sideways so that the two quantities' bars do not hide each other.
                x = mean.index.to_numpy(float) + offset * max(1.0, float(np.ptp(mean.index)))
                draw_interval(
                    axes, x, mean.to_numpy(float), *(bounds[c].to_numpy(float) for c in bounds),
                    ecolor=color, capsize=3, elinewidth=1.0,
                )  # fmt: skip
            elif (grouped.size() > 1).any():
                axes.fill_between(mean.index, low.values, high.values, color=color, alpha=0.2)
        axes.set_title(target)
        axes.set_xlabel("pre-training epoch of P fine-tuned from")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(metric_axis_label(tasks[target], "P-T"))
        style_axes(axes)
        legend_outside(axes)
    return figure
