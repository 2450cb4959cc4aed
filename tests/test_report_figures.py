"""The report's figures as a reader sees them: legends outside the data, axes that show
what was run (noise levels as ticks, CKA scaled to its values), no empty rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fixtures_report import MODULES, NETWORK, TARGETS, TASKS, make_study
from transferlens.report import blocks, build_report, load_results
from transferlens.report.figures_analysis import plot_cka_layers
from transferlens.report.figures_criticality import plot_rewind_heatmap, plot_unit_paths


def test_rewind_heatmap_has_no_row_without_a_rewound_metric(tmp_path: Path) -> None:
    """criticality.csv's ``network`` row (summed criticality, nothing rewound) is no heatmap row."""
    criticality = load_results(make_study(tmp_path / "study")).get("criticality")
    assert (criticality["module"] == NETWORK).any()  # the fixture writes it, as the study does
    figure = plot_rewind_heatmap(criticality, list(TARGETS), TASKS)
    (axes,) = [axes for axes in figure.axes if axes.get_ylabel().startswith("module rewound")]
    assert [label.get_text() for label in axes.get_yticklabels()] == list(MODULES)
    assert np.isfinite(axes.images[0].get_array()).all()  # no blank cell left either


def conv1_paths(levels: tuple[float, ...]) -> pd.DataFrame:
    rows = [
        dict(target="near", init=init, path=path, distance=distance, sigma=sigma, metric=0.5)
        for init in ("PT", "RIT")
        for path in ("direct", "checkpoints")
        for distance in (0.0, 0.07, 0.14)
        for sigma in levels
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("levels", [(0.0, 0.05, 0.1), (0.0, 0.1), (0.0, 0.01, 0.5, 1.0)])
def test_conv1_noise_axis_is_ticked_at_exactly_the_noise_levels(
    levels: tuple[float, ...],
) -> None:
    figure = plot_unit_paths(conv1_paths(levels), ["near"], {"near": "multiclass"}, "conv1")
    panels = [axes for axes in figure.axes if axes.get_ylabel() == "noise sigma"]
    assert len(panels) == 4
    for axes in panels:
        np.testing.assert_allclose(axes.get_yticks(), levels)
        assert [label.get_text() for label in axes.get_yticklabels()] == [f"{s:g}" for s in levels]


def test_cka_axis_is_scaled_to_the_data_with_a_margin() -> None:
    values = {"PT-PT": (1.0, 0.99, 0.97), "PT-RIT": (0.95, 0.86, 0.78)}
    cka = pd.DataFrame(
        [
            dict(target="near", pair=pair, layer=layer, cka=v, cka_low=v - 0.01, cka_high=v)
            for pair, series in values.items()
            for layer, v in zip(("conv1", "layer1", "layer2"), series)
        ]
    )
    (axes,) = plot_cka_layers(cka, ["near"]).axes
    low, high = axes.get_ylim()
    assert 0.70 < low < 0.77  # not 0: the lowest interval (0.77) with a margin below it
    assert 1.0 < high < 1.05


def assert_legends_outside(figure: Figure, seen: list[str]) -> None:
    """Every legend lies beside its axes (never over the plotting area) and inside the figure."""
    figure.draw_without_rendering()
    figure_box = figure.bbox
    for axes in figure.axes:
        legend = axes.get_legend()
        if legend is None:
            continue
        box, area = legend.get_window_extent(), axes.get_window_extent()
        assert not box.overlaps(area), f"a legend covers the data of {axes.get_title()!r}"
        assert figure_box.contains(box.x0, box.y0) and figure_box.contains(box.x1, box.y1)
        seen.append(axes.get_title())


def test_no_legend_covers_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every figure of the full report, checked as it is written."""
    seen: list[str] = []
    original = blocks.figure_png

    def checked(figure: Figure) -> bytes:
        assert_legends_outside(figure, seen)
        return original(figure)

    monkeypatch.setattr(blocks, "figure_png", checked)
    build_report(make_study(tmp_path / "study"))
    titles = " ".join(seen)
    assert len(seen) > 20  # learning curves, shuffling, CKA, distances, interpolation, ...
    assert "test metric along the line" in titles and "optimisation speed" in titles
