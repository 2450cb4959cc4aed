"""Intervals in the training tables and in every figure (issue #16 part 2).

reuse.csv and pretrain_checkpoints.csv gain intervals across seeds (checked against the
t-interval and the jackknife written out from their formulas); the report draws and
prints the intervals its tables hold, and renders as before without them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from scipy import stats

from fixtures_report import TARGETS, TASKS, make_study
from test_reuse import runs_table, with_groups
from transferlens.analysis import feature_reuse, pretrain_checkpoints
from transferlens.analysis.reuse import SEED_INTERVAL_COLUMNS
from transferlens.report import build_report, load_results
from transferlens.report.figures import plot_pretrain_checkpoints, plot_reuse
from transferlens.report.figures_analysis import (
    plot_cka_layers,
    plot_distance_modules,
    plot_kappa,
)
from transferlens.report.sections_training import reuse_seed_runs

NA = float("nan")


def t_interval(values: list[float]) -> tuple[float, float]:
    """mean +- t_{0.975, k-1} sd / sqrt(k), written out in float64."""
    array = np.asarray(values, dtype=np.float64)
    half = stats.t.ppf(0.975, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size)
    return array.mean() - half, array.mean() + half


def gap(pt: list[float], rit: list[float]) -> float:
    return 100.0 * (np.mean(pt) - np.mean(rit)) / np.mean(pt)


def jackknife_gap(pt: list[float], rit: list[float]) -> tuple[float, float]:
    """Delete-one-run jackknife of the relative gap over both arms' runs, df = k_min - 1."""
    thetas = [gap(pt[:i] + pt[i + 1 :], rit) for i in range(len(pt))]
    thetas += [gap(pt, rit[:i] + rit[i + 1 :]) for i in range(len(rit))]
    m = len(thetas)
    se = math.sqrt((m - 1) / m * np.sum((np.asarray(thetas) - np.mean(thetas)) ** 2))
    half = stats.t.ppf(0.975, min(len(pt), len(rit)) - 1) * se
    return gap(pt, rit) - half, gap(pt, rit) + half


# --- the tables --------------------------------------------------------------------------


def test_reuse_intervals_follow_their_formulas_and_leave_the_old_columns_alone() -> None:
    runs = runs_table()
    runs.loc[len(runs)] = ["target", "RIT", "real", 2, NA, NA, 0.62, 0.41]  # 2 P-T vs 3 RI-T
    table = feature_reuse(runs).to_frame()
    assert list(table.columns[-len(SEED_INTERVAL_COLUMNS) :]) == list(SEED_INTERVAL_COLUMNS)
    row = table[(table["target"] == "real") & table["block_size"].isna()].iloc[0]
    pt, rit = [0.80, 0.90], [0.60, 0.70, 0.62]
    expected = {
        "metric_pt": t_interval(pt),
        "metric_rit": t_interval(rit),
        "speed_pt": t_interval([0.70, 0.60]),
        "speed_rit": t_interval([0.40, 0.50, 0.41]),
        "relative_gap": jackknife_gap(pt, rit),
    }
    for name, (low, high) in expected.items():
        assert row[f"{name}_seeds_low"] == pytest.approx(low, rel=1e-12)
        assert row[f"{name}_seeds_high"] == pytest.approx(high, rel=1e-12)
    # One seed in an arm: no spread, so no interval (not a zero-width one).
    pixel = table[table["block_size"] == 0].iloc[0]
    assert pixel[list(SEED_INTERVAL_COLUMNS)].isna().all()
    # The columns that were there are the 13 of before, computed as before.
    assert len(table.columns) == 13 + len(SEED_INTERVAL_COLUMNS)
    assert row["metric_rit"] == pytest.approx(np.mean(rit))


def test_pretrain_checkpoint_intervals() -> None:
    table = pretrain_checkpoints(runs_table()).to_frame()
    assert list(table.columns[7:]) == [
        "final_test_metric_seeds_low", "final_test_metric_seeds_high",
        "optimization_speed_seeds_low", "optimization_speed_seeds_high",
    ]  # fmt: skip
    real = table[table["target"] == "real"].set_index("pretrain_epoch")
    low, high = t_interval([0.75, 0.65])
    assert (
        real.loc[1, "final_test_metric_seeds_low"],
        real.loc[1, "final_test_metric_seeds_high"],
    ) == (
        pytest.approx(low, rel=1e-12),
        pytest.approx(high, rel=1e-12),
    )
    sketch = table[table["target"] == "sketch"].iloc[0]  # one seed
    assert math.isnan(sketch["final_test_metric_seeds_low"])


# --- the figures draw the tables' intervals -----------------------------------------------


def error_segments(figure: Figure) -> list[tuple[float, float]]:
    """(low, high) of every vertical error bar drawn in ``figure``, sorted."""
    spans = []
    for axes in figure.axes:
        for collection in axes.collections:
            if isinstance(collection, LineCollection):
                for segment in collection.get_segments():
                    (x0, y0), (x1, y1) = segment[0], segment[-1]
                    if x0 == x1 and y0 != y1:
                        spans.append((round(min(y0, y1), 9), round(max(y0, y1), 9)))
    return sorted(spans)


def reuse_table() -> pd.DataFrame:
    """One row per block size as a study writes it, with made-up seed intervals."""
    rows = []
    for block, (pt, rit) in {None: (0.8, 0.5), 1: (0.4, 0.45)}.items():
        rows.append(
            dict(target="near", block_size=block, metric_pt=pt, metric_rit=rit,
                 relative_gap=gap([pt], [rit]), speed_pt=pt - 0.1, speed_rit=rit - 0.1,
                 metric_pt_seeds_low=pt - 0.05, metric_pt_seeds_high=pt + 0.03,
                 metric_rit_seeds_low=rit - 0.02, metric_rit_seeds_high=rit + 0.04,
                 speed_pt_seeds_low=pt - 0.2, speed_pt_seeds_high=pt + 0.01,
                 speed_rit_seeds_low=NA, speed_rit_seeds_high=NA,
                 relative_gap_seeds_low=-5.0, relative_gap_seeds_high=70.0)
        )  # fmt: skip
    return pd.DataFrame(rows)


def test_block_shuffling_bars_are_the_tables_intervals_with_a_dot_per_seed() -> None:
    reuse = reuse_table()
    seeds = pd.DataFrame(
        dict(target="near", init=["PT", "PT", "RIT"], block_size=[None, None, 1],
             final_test_metric=[0.79, 0.81, 0.45], optimization_speed=[0.7, 0.7, 0.35])
    )  # fmt: skip
    figure = plot_reuse(reuse, ["near"], {"near": "multiclass"}, seeds)
    final, speed = figure.axes
    expected = []
    for column in ("metric_pt", "metric_rit", "speed_pt"):
        for low, high in zip(reuse[f"{column}_seeds_low"], reuse[f"{column}_seeds_high"]):
            expected.append((round(100 * low, 9), round(100 * high, 9)))
    assert error_segments(figure) == sorted(expected)  # speed_rit has none (NaN): no bar
    dots = [c for c in final.collections if c.get_label() == "one seed's run"]
    assert len(dots) == 1 and sorted(dots[0].get_offsets()[:, 1]) == pytest.approx([79, 81])
    assert len(speed.collections) > 0


def test_block_shuffling_without_intervals_renders_as_before() -> None:
    reuse = reuse_table().drop(columns=[c for c in reuse_table() if "_seeds_" in c])
    figure = plot_reuse(reuse, ["near"], {"near": "multiclass"})
    assert error_segments(figure) == []  # one row per block size, nothing to span


def test_pretrain_error_bars_are_the_tables() -> None:
    table = pd.DataFrame(
        dict(target="near", pretrain_epoch=[0, 2], final_test_metric=[0.5, 0.7],
             optimization_speed=[0.4, 0.6], n=2, final_test_metric_seeds_low=[0.45, 0.6],
             final_test_metric_seeds_high=[0.52, 0.75], optimization_speed_seeds_low=NA,
             optimization_speed_seeds_high=NA)
    )  # fmt: skip
    figure = plot_pretrain_checkpoints(table, ["near"], {"near": "multiclass"})
    assert error_segments(figure) == [(45.0, 52.0), (60.0, 75.0)]
    old = table.drop(columns=[c for c in table if "_seeds_" in c])
    assert error_segments(plot_pretrain_checkpoints(old, ["near"], {"near": "multiclass"})) == []


def mistakes_table(extra: bool) -> pd.DataFrame:
    rows = []
    for pair, kappa in (("PT-PT", 0.7), ("PT-RIT", 0.3)):
        row = dict(target="near", pair=pair, n=100, both_right=60, both_wrong=20,
                   only_first_wrong=10, only_second_wrong=10, kappa=kappa,
                   kappa_low=kappa - 0.05, kappa_high=kappa + 0.05)  # fmt: skip
        if extra:
            row.update(
                kappa_max=0.9, kappa_ratio=kappa / 0.9, kappa_ratio_low=kappa / 0.9 - 0.1,
                kappa_ratio_high=kappa / 0.9 + 0.1,
                kappa_seeds_low=NA if pair == "PT-PT" else 0.1,
                kappa_seeds_high=NA if pair == "PT-PT" else 0.55,
                kappa_ratio_seeds_low=NA, kappa_ratio_seeds_high=NA,
                n_pairs=1 if pair == "PT-PT" else 4,
            )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def test_kappa_figure_draws_both_intervals_the_bound_and_the_seed_pairs() -> None:
    pairs = pd.DataFrame(
        dict(target="near", pair="PT-RIT", first_seed=[0, 0, 1, 1], second_seed=[0, 1, 0, 1],
             kappa=[0.2, 0.3, 0.35, 0.4])
    )  # fmt: skip
    figure = plot_kappa(mistakes_table(True), ["near"], pairs)
    (axes,) = figure.axes
    spans = error_segments(figure)
    assert (0.1, 0.55) in spans  # PT-RIT across seed pairs, as in the table
    assert (0.65, 0.75) in spans and (0.25, 0.35) in spans  # the bootstrap intervals
    assert len(spans) == 3  # PT-PT has one seed pair: no interval across pairs
    bounds = [line for line in axes.lines if line.get_gid() == "kappa_max"]
    assert sorted(line.get_ydata()[0] for line in bounds) == [0.9, 0.9]
    dots = [c for c in axes.collections if not isinstance(c, LineCollection)]
    assert sorted(dots[0].get_offsets()[:, 1]) == pytest.approx([0.2, 0.3, 0.35, 0.4])
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend == [
        "bootstrap over test images", "across seed pairs (jackknife)",
        "kappa_max (from accuracies)", "one seed pair",
    ]  # fmt: skip
    old = plot_kappa(mistakes_table(False), ["near"])
    assert error_segments(old) == [(0.25, 0.35), (0.65, 0.75)]
    assert old.axes[0].get_legend() is None


def test_cka_and_distance_figures_draw_the_seed_intervals() -> None:
    cka = pd.DataFrame(
        dict(target="near", pair="PT-RIT", layer=["conv1", "layer1"], cka=[0.6, 0.4],
             cka_low=[0.58, 0.38], cka_high=[0.62, 0.42], cka_p=0.01,
             cka_seeds_low=[0.5, 0.2], cka_seeds_high=[0.7, 0.55], n_pairs=4)
    )  # fmt: skip
    pairs = pd.DataFrame(
        dict(target="near", pair="PT-RIT", first_seed=0, second_seed=[0, 1], layer="conv1",
             cka=[0.55, 0.65])
    )  # fmt: skip
    figure = plot_cka_layers(cka, ["near"], pairs=pairs)
    assert error_segments(figure) == [(0.2, 0.55), (0.5, 0.7)]
    dots = [c for c in figure.axes[0].collections if c.get_offsets().shape[0] == 2]
    assert any(sorted(c.get_offsets()[:, 1]) == pytest.approx([0.55, 0.65]) for c in dots)
    assert error_segments(plot_cka_layers(cka[["target", "pair", "layer", "cka", "cka_low",
                                               "cka_high"]], ["near"])) == []  # fmt: skip
    distance = pd.DataFrame(
        dict(target="near", pair="PT-PT", module=["all", "conv1", "fc"], l2=[3.0, 1.0, 2.0],
             l2_seeds_low=[2.5, 0.5, 1.5], l2_seeds_high=[3.5, 1.25, 2.5], n_pairs=3)
    )  # fmt: skip
    assert error_segments(plot_distance_modules(distance, ["near"])) == [(0.5, 1.25), (1.5, 2.5)]
    plain = distance[["target", "pair", "module", "l2"]]
    assert error_segments(plot_distance_modules(plain, ["near"])) == []


# --- the report's tables print the tables' intervals --------------------------------------


def add_intervals(study: Path) -> Path:
    """Give the fixture study's tables the added columns, with bounds a test can find."""
    results = study / "results"
    reuse = pd.read_csv(results / "reuse.csv")
    reuse = reuse.groupby(["target", "block_size"], dropna=False, sort=False)
    reuse = reuse.mean(numeric_only=True).reset_index()
    for column in ("metric_pt", "metric_rit", "speed_pt", "speed_rit"):
        reuse[f"{column}_seeds_low"] = 0.1234
        reuse[f"{column}_seeds_high"] = 0.9876
    reuse["relative_gap_seeds_low"], reuse["relative_gap_seeds_high"] = -12.34, 56.78
    reuse.to_csv(results / "reuse.csv", index=False)
    pretrain = pd.read_csv(results / "pretrain_checkpoints.csv")
    pretrain = pretrain.groupby(["target", "pretrain_epoch"]).mean().reset_index().assign(n=2)
    pretrain["final_test_metric_seeds_low"] = 0.4321
    pretrain["final_test_metric_seeds_high"] = 0.8771
    pretrain["optimization_speed_seeds_low"] = pretrain["optimization_speed_seeds_high"] = NA
    pretrain.to_csv(results / "pretrain_checkpoints.csv", index=False)
    mistakes = pd.read_csv(results / "mistakes.csv")
    mistakes = mistakes.assign(
        kappa_max=0.917, kappa_ratio=0.432, kappa_ratio_low=0.321, kappa_ratio_high=0.543,
        kappa_seeds_low=0.111, kappa_seeds_high=0.999, kappa_ratio_seeds_low=0.222,
        kappa_ratio_seeds_high=0.888, n_pairs=4,
    )  # fmt: skip
    mistakes.to_csv(results / "mistakes.csv", index=False)
    cka = pd.read_csv(results / "cka.csv")
    cka = cka.assign(cka_p=0.004975, cka_seeds_low=0.011, cka_seeds_high=0.987, n_pairs=4)
    cka.to_csv(results / "cka.csv", index=False)
    distance = pd.read_csv(results / "distance.csv")
    distance = distance.assign(l2_seeds_low=1.11, l2_seeds_high=22.22, n_pairs=4)
    distance.to_csv(results / "distance.csv", index=False)
    return study


def page_text(study: Path) -> str:
    import html
    import re

    raw = (build_report(study)).read_text(encoding="utf-8")
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", raw)))


def test_report_tables_show_the_intervals_of_the_tables(tmp_path: Path) -> None:
    text = page_text(add_intervals(make_study(tmp_path / "study")))
    assert "80.2% [12.3%, 98.8%]" in text  # reuse: P-T final, near, unshuffled
    assert "[-12.3%, 56.8%]" in text  # the relative gap's jackknife interval
    assert "0.702 [0.123, 0.988]" in text  # far is ROC-AUC: a fraction
    assert "[43.2%, 87.7%]" in text  # pretrain_checkpoints
    assert "[0.11, 1.00] (4 pairs)" in text  # kappa across seed pairs
    assert "0.92" in text and "0.43 [0.32, 0.54]" in text  # kappa_max, kappa / kappa_max
    assert "; seeds [0.01, 0.99]; p = 0.00498" in text  # CKA cells
    assert "p: the permutation p-value of CKA" in text
    assert "3.0 [1.1, 22.2]" in text  # whole-network l2
    for phrase in ("95% t-interval of the mean across seeds", "delete-one-run jackknife",
                   "bootstrap over test images"):  # fmt: skip
        assert phrase in text


def test_report_without_the_new_columns_reads_as_before(tmp_path: Path) -> None:
    text = page_text(make_study(tmp_path / "study"))
    absent = ("kappa across seed pairs", "Black bars: kappa_max", "; seeds [", "p: the permutation",
              "Error bars: the 95%", "error bars are the 95%", "(4 pairs)")  # fmt: skip
    for phrase in absent:
        assert phrase not in text
    assert "Error bars span the seeds when there are several." in text


def test_seed_dots_come_from_the_runs_the_table_averages() -> None:
    runs = with_groups(runs_table())
    seeds = reuse_seed_runs(runs)
    assert len(seeds) == len(runs[runs["groups"].str.contains("block_shuffle")]) - 1  # unfinished
    assert reuse_seed_runs(runs_table()) is None  # no groups: no dots
    assert set(seeds.columns) == {"target", "init", "block_size", "final_test_metric",
                                  "optimization_speed"}  # fmt: skip


def test_the_fixture_studys_bars_are_its_tables_intervals(tmp_path: Path) -> None:
    results = load_results(add_intervals(make_study(tmp_path / "study")))
    figure = plot_reuse(results.get("reuse"), list(TARGETS), TASKS)
    spans = set(error_segments(figure))
    assert spans == {(12.34, 98.76), (0.1234, 0.9876)}  # accuracy in percent, ROC-AUC as is


def test_no_legend_covers_data_with_every_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_report_figures import assert_legends_outside
    from transferlens.report import blocks

    seen: list[str] = []
    original = blocks.figure_png

    def checked(figure: Figure) -> bytes:
        assert_legends_outside(figure, seen)
        return original(figure)

    monkeypatch.setattr(blocks, "figure_png", checked)
    build_report(add_intervals(make_study(tmp_path / "study")))
    assert len(seen) > 20
