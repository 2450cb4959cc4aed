"""Fig. 4: test metric and loss along the straight line between two models, one panel
column per alignment setting, the barrier (mean over seed pairs) in the legend and, where
``interpolation.csv`` has them, each point's 95% interval over the test images
(``loss_low/high``, ``metric_low/high``: the bootstrap the barriers use) as a shaded band.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from transferlens.report.figures import color_of, legend_outside, panel_grid, style_axes
from transferlens.report.figures_analysis import shown_targets
from transferlens.report.formatting import format_metric_difference, metric_axis_label, metric_scale
from transferlens.report.seed_pairs import pair_order

INTERVALS = ("metric_low", "metric_high", "loss_low", "loss_high")
ALIGN_ORDER = ("none", "weights", "activations")
ALIGN_TITLES = {"none": "as trained", "weights": "aligned by weights",
                "activations": "aligned by activations"}  # fmt: skip


def _align_settings(frame: pd.DataFrame) -> list[str]:
    """The align settings of an interpolation table, in :data:`ALIGN_ORDER`; ``["none"]``
    for a table written before alignment existed (no ``align`` column)."""
    if "align" not in frame.columns:
        return ["none"]
    found = [str(value) for value in frame["align"].dropna().unique()]
    return [name for name in ALIGN_ORDER if name in found] + sorted(
        name for name in found if name not in ALIGN_ORDER
    )


def _title(align: str) -> str:
    return ALIGN_TITLES.get(align, align)


def _setting_rows(frame: pd.DataFrame, align: str, repair: bool) -> pd.DataFrame:
    """The rows of one (align, repair) setting; all rows of a table without the columns."""
    chosen = pd.Series(True, index=frame.index)
    if "align" in frame.columns:
        chosen &= frame["align"].astype(str) == align
    if "repair" in frame.columns:
        chosen &= frame["repair"].astype(str).str.lower() == str(repair).lower()
    elif repair:
        chosen &= False
    return frame[chosen]


def _interpolation_panels(
    metric_axes: Axes,
    loss_axes: Axes,
    rows: pd.DataFrame,
    barriers: pd.DataFrame | None,
    target: str,
    task: str,
    align: str,
) -> None:
    """The curves of one align setting: unrepaired solid, REPAIRed dashed, the metric
    barrier (mean over seed pairs) in the legend, each point's test-set interval shaded
    where the table has it."""
    intervals = set(INTERVALS) <= set(rows.columns)
    values = ["metric", "loss", *(INTERVALS if intervals else ())]
    for repair, style in ((False, "-"), (True, "--")):
        setting = _setting_rows(rows, align, repair)
        for position, pair in enumerate(pair_order(setting)):
            curve = setting[setting["pair"] == pair].groupby("lam")[values].mean().sort_index()
            name = f"{pair} REPAIR" if repair else pair
            label = name
            if barriers is not None:
                found = _setting_rows(barriers, align, repair)
                found = found[(found["target"] == target) & (found["pair"] == pair)]
                if not found.empty:
                    barrier = format_metric_difference(found["metric_barrier"].mean(), task)
                    label += f" (barrier {barrier})"
            color = color_of(pair, position)
            metric_axes.plot(
                curve.index,
                curve["metric"] * metric_scale(task),
                color=color,
                linestyle=style,
                label=label,
            )
            loss_axes.plot(curve.index, curve["loss"], color=color, linestyle=style, label=name)
            if intervals:
                _band(metric_axes, curve, "metric", metric_scale(task), color)
                _band(loss_axes, curve, "loss", 1.0, color)


def _band(axes: Axes, curve: pd.DataFrame, value: str, scale: float, color: str) -> None:
    """The test-set interval of each point (``<value>_low/_high``) as a shaded band."""
    low, high = curve[f"{value}_low"] * scale, curve[f"{value}_high"] * scale
    if low.notna().any():
        axes.fill_between(curve.index, low, high, color=color, alpha=0.15, linewidth=0)


def plot_interpolation(
    interpolation: pd.DataFrame,
    barriers: pd.DataFrame | None,
    targets: list[str],
    tasks: dict[str, str],
) -> Figure:
    """Fig. 4: test metric and loss along (1-lam) theta + lam theta', barriers in the legend.

    One align setting (the paper's, or a table without ``align``): per target the metric
    (left) and the loss (right). Several: per target a row of metric panels and a row of
    loss panels, one column per setting (as trained, aligned by weights, by
    activations) on shared axes; REPAIRed curves dashed in their setting's panel.
    """
    shown = shown_targets(interpolation, targets)
    settings = _align_settings(interpolation)
    single = len(settings) == 1
    columns = 2 if single else len(settings)
    count = 2 * len(shown) if single else 2 * len(shown) * columns
    figure, panels = panel_grid(count, columns=columns, width=6.2 if single else 5.0, height=3.3)
    for index, target in enumerate(shown):
        rows = interpolation[interpolation["target"] == target]
        task = tasks[target]
        if single:
            panel_sets = [(panels[2 * index], panels[2 * index + 1], settings[0], "")]
        else:
            first = 2 * index * columns
            panel_sets = [
                (panels[first + k], panels[first + columns + k], align, f" ({_title(align)})")
                for k, align in enumerate(settings)
            ]
        for metric_axes, loss_axes, align, suffix in panel_sets:
            _interpolation_panels(metric_axes, loss_axes, rows, barriers, target, task, align)
            metric_axes.set_ylabel(metric_axis_label(task))
            metric_axes.set_title(f"{target}: test metric along the line{suffix}")
            loss_axes.set_ylabel("test loss")
            loss_axes.set_title(f"{target}: test loss along the line{suffix}")
            for axes in (metric_axes, loss_axes):
                axes.set_xlabel("interpolation weight lambda (0 = first model, 1 = second)")
                style_axes(axes)
                legend_outside(axes, fontsize=7)
        if len(panel_sets) > 1:  # the settings side by side on one scale
            for which in (0, 1):
                group = [panel_set[which] for panel_set in panel_sets]
                low = min(axes.get_ylim()[0] for axes in group)
                high = max(axes.get_ylim()[1] for axes in group)
                for axes in group:
                    axes.set_ylim(low, high)
    return figure


def interpolation_caption(interpolation: pd.DataFrame) -> str:
    """The figure's caption: with several align settings, how the panels are laid out;
    with the points' intervals (``loss_low`` ...), what the band is."""
    aligned = "align" in interpolation.columns and interpolation["align"].nunique() > 1
    band = ""
    if set(INTERVALS) <= set(interpolation.columns):
        band = " Shaded: each point's 95% interval over the test images (bootstrap)."
    if not aligned:
        return (
            "Along the line between two models: test metric (left, barrier in the legend) "
            "and test loss (right)." + band
        )
    return (
        "Along the line between two models (the first seed pair of each pair kind): test "
        "metric (top row, barrier in the legend) and test loss (bottom row), one column per "
        "alignment of the second model's units to the first's (as trained, weight "
        "matching, activation matching); dashed: with REPAIR." + band
    )
