"""The report shows each run's own intervals from runs.csv (final test metric over the test
examples, optimisation speed over the train-eval examples), and renders as before for a
runs.csv without them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from test_report_intervals import error_segments, reuse_table
from test_reuse import runs_table, with_groups
from transferlens.report.figures import plot_reuse
from transferlens.report.sections_training import (
    RUN_INTERVAL_COLUMNS,
    has_run_intervals,
    reuse_seed_runs,
    run_interval_rows,
)
from transferlens.results import main_runs


def _with_run_intervals(runs: pd.DataFrame) -> pd.DataFrame:
    """runs.csv with made-up intervals: final +- 0.05 (test), speed +- 0.03 (train-eval)."""
    runs = runs.copy()
    runs["final_test_metric_low"] = runs["final_test_metric"] - 0.05
    runs["final_test_metric_high"] = runs["final_test_metric"] + 0.05
    runs["optimization_speed_low"] = runs["optimization_speed"] - 0.03
    runs["optimization_speed_high"] = runs["optimization_speed"] + 0.03
    return runs


def test_each_main_run_is_shown_with_its_own_intervals() -> None:
    runs = _with_run_intervals(with_groups(runs_table()))
    assert has_run_intervals(runs) and not has_run_intervals(with_groups(runs_table()))
    rows = run_interval_rows(main_runs(runs), ["real"], {"real": "multiclass"})
    assert rows == [
        ["real", "P-T", "0", "80.0% [75.0%, 85.0%]", "70.0% [67.0%, 73.0%]"],
        ["real", "RI-T", "0", "60.0% [55.0%, 65.0%]", "40.0% [37.0%, 43.0%]"],
    ]
    old = with_groups(runs_table())  # a folder trained before the intervals
    for column in RUN_INTERVAL_COLUMNS:
        old[column] = float("nan")
    assert not has_run_intervals(old)


def test_each_seed_dot_carries_its_runs_interval_in_the_block_shuffling_figure() -> None:
    runs = _with_run_intervals(with_groups(runs_table()))
    seeds = reuse_seed_runs(runs)
    assert list(seeds.columns[-4:]) == list(RUN_INTERVAL_COLUMNS)
    seeds = seeds.assign(target="near")
    reuse = reuse_table()
    with_bars = error_segments(plot_reuse(reuse, ["near"], {"near": "multiclass"}, seeds))
    plain = reuse_seed_runs(with_groups(runs_table())).assign(target="near")
    without = error_segments(plot_reuse(reuse, ["near"], {"near": "multiclass"}, plain))
    shown = seeds[seeds["block_size"].isna() | (seeds["block_size"] == 1)]  # the table's blocks
    expected = []
    for run in shown.itertuples():
        for column in ("final_test_metric", "optimization_speed"):
            low, high = getattr(run, f"{column}_low"), getattr(run, f"{column}_high")
            expected.append((round(100 * low, 9), round(100 * high, 9)))
    # The table's own bars stay; each shown run adds its two (final, speed).
    np.testing.assert_allclose(with_bars, sorted(without + expected), atol=1e-9)
