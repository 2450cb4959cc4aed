"""How numbers are written in the report: accuracy as percent, ROC-AUC as a fraction.

Metrics are fractions in [0, 1] everywhere in the tables. Top-1 accuracy is shown
in percent (``78.5%``) and differences of it in percentage points; mean ROC-AUC
(multi-label targets) stays a fraction (``0.785``), as in the paper.
"""

from __future__ import annotations

import math

import pandas as pd


def metric_scale(task: str) -> float:
    """Factor from the stored fraction to the shown number (100 for accuracy)."""
    return 1.0 if task == "multilabel" else 100.0


def metric_name(task: str) -> str:
    return "mean ROC-AUC" if task == "multilabel" else "accuracy"


def metric_axis_label(task: str, what: str = "test") -> str:
    """Axis label with its unit, e.g. ``test accuracy (%)``."""
    if task == "multilabel":
        return f"{what} mean ROC-AUC"
    return f"{what} accuracy (%)"


def is_missing(value: object) -> bool:
    """None, NaN or pandas' NA (an empty cell of a results table)."""
    if value is None or value is pd.NA:
        return True
    try:
        return bool(math.isnan(float(value)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _metric_text(value: float | None, task: str, percent_unit: str) -> str:
    """ROC-AUC (``multilabel``) as a fraction, accuracy in percent followed by ``percent_unit``."""
    if is_missing(value):
        return "n/a"
    if task == "multilabel":
        return f"{float(value):.3f}"
    return f"{100.0 * float(value):.1f}{percent_unit}"


def format_metric(value: float | None, task: str) -> str:
    """``78.5%`` (accuracy) or ``0.785`` (ROC-AUC); ``n/a`` when missing."""
    return _metric_text(value, task, "%")


def format_metric_difference(value: float | None, task: str) -> str:
    """A difference of metrics: ``12.3 points`` (accuracy) or ``0.123`` (ROC-AUC)."""
    return _metric_text(value, task, " points")


def format_number(value: float | None, digits: int = 2) -> str:
    if is_missing(value):
        return "n/a"
    return f"{float(value):.{digits}f}"


def format_interval(
    value: float | None, low: float | None, high: float | None, digits: int = 2
) -> str:
    """``0.62 [0.58, 0.66]``; the bracket is left out when the interval is missing."""
    shown = format_number(value, digits)
    if is_missing(low) or is_missing(high):
        return shown
    return f"{shown} [{float(low):.{digits}f}, {float(high):.{digits}f}]"


def format_bracket(low: float | None, high: float | None, digits: int = 2) -> str:
    """``[0.58, 0.66]``, or ``n/a`` when a bound is missing (no spread to measure)."""
    if is_missing(low) or is_missing(high):
        return "n/a"
    return f"[{float(low):.{digits}f}, {float(high):.{digits}f}]"


def format_metric_interval(
    value: float | None, low: float | None, high: float | None, task: str
) -> str:
    """``57.3% [40.1%, 74.5%]`` (accuracy) or ``0.573 [0.401, 0.745]`` (ROC-AUC); the
    bracket is left out when the interval is missing."""
    shown = format_metric(value, task)
    if is_missing(low) or is_missing(high):
        return shown
    return f"{shown} [{format_metric(low, task)}, {format_metric(high, task)}]"


def format_percent_interval(value: float | None, low: float | None, high: float | None) -> str:
    """A value already in percent (the relative gap): ``78.8% [60.0%, 97.6%]``."""
    if is_missing(value):
        return "n/a"
    shown = f"{float(value):.1f}%"
    if is_missing(low) or is_missing(high):
        return shown
    return f"{shown} [{float(low):.1f}%, {float(high):.1f}%]"


def format_p_value(value: float | None) -> str:
    """A permutation p-value to three significant digits (``0.00498``), ``n/a`` if missing."""
    return "n/a" if is_missing(value) else f"{float(value):.3g}"


def has_values(frame: pd.DataFrame | None, *columns: str) -> bool:
    """Does ``frame`` hold every one of ``columns`` with at least one value in the first?
    (Columns added by later versions are absent from older study folders.)"""
    if frame is None or not all(column in frame.columns for column in columns):
        return False
    return bool(pd.to_numeric(frame[columns[0]], errors="coerce").notna().any())


def block_label(block_size: object) -> str:
    """``none`` for unshuffled (empty), ``pixel`` for 0, else the block side."""
    if is_missing(block_size):
        return "none"
    size = int(block_size)  # type: ignore[arg-type]
    return "pixel" if size == 0 else str(size)


def block_sort_key(block_size: object) -> float:
    """Pixel shuffle first, then growing blocks, unshuffled last (the paper's order)."""
    if is_missing(block_size):
        return math.inf
    size = int(block_size)  # type: ignore[arg-type]
    return -1.0 if size == 0 else float(size)
