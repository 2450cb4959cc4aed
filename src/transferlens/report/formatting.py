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
