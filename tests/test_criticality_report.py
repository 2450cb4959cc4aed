"""The report's criticality cells and figure: every seed, the evaluation-set interval, the
mean over seeds with its t-interval on log10(1 + criticality)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from transferlens.report.figures_criticality import criticality_scale, plot_criticality
from transferlens.report.sections_criticality import criticality_cell


def table(seeds: int) -> pd.DataFrame:
    rows = []
    for seed in range(seeds):
        for init, scale in (("PT", 1.0), ("RIT", 10.0)):
            for number, module in enumerate(("conv1", "layer1", "fc")):
                value = scale * (number + 1) * (seed + 1)
                high = math.inf if module == "conv1" else 2 * value
                rows.append(("t", init, module, value, True, value / 2, high, seed))
    columns = ["target", "init", "module", "criticality", "resolved", "criticality_low",
               "criticality_high", "seed"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def test_one_seed_cell_shows_the_evaluation_set_interval():
    rows = table(1)
    conv1 = rows[(rows["init"] == "PT") & (rows["module"] == "conv1")]
    assert criticality_cell(conv1) == "1 [0.5, inf]"
    fc = rows[(rows["init"] == "RIT") & (rows["module"] == "fc")]
    assert criticality_cell(fc) == "30 [15, 60]"


def test_several_seeds_cell_shows_each_seed_and_the_t_interval_on_the_log_scale():
    rows = table(3)
    fc = rows[(rows["init"] == "RIT") & (rows["module"] == "fc")]
    logs = np.log10(1.0 + np.array([30.0, 60.0, 90.0]))
    half = stats.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    expected = f"30, 60, 90; log10(1+mu) {logs.mean():.2f} [{logs.mean() - half:.2f}, " + (
        f"{logs.mean() + half:.2f}]"
    )
    assert criticality_cell(fc) == expected


def test_figure_draws_every_seed_and_unbounded_intervals():
    assert list(criticality_scale([0.0, 9.0, math.inf])) == [0.0, 1.0, math.inf]
    figure = plot_criticality(table(2), ["t"], ["conv1", "layer1", "fc"])
    axes = figure.axes[0]
    points = [line for line in axes.lines if line.get_marker() == "o"]
    assert len(points) == 2 * 2  # one line of points per (init, seed)
    assert sum(len(line.get_xdata()) for line in points) == 2 * 2 * 3
    assert any(line.get_marker() == "^" for line in axes.lines)  # conv1's bound at inf
