"""The report on any architecture: the lower modules from the module map (or the rule on a
table's order), figures and tables by unit and stage, the token reduction stated, and
studies written before module_map.csv, cka_layers.csv and distance_stages.csv still render.

The ViT-like study is the fabricated study of :mod:`fixtures_report` with its per-unit
tables rewritten by hand for the units ``stem, blocks.0..5, norm, head`` (stages stem,
blocks, head): unit i of 9 sits at depth i/8, so the lower modules (depth < 1/3) are
``stem, blocks.0, blocks.1``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fixtures_report import TARGETS, TASKS, headline, make_study
from test_report import assert_nonblank_png, read_page
from transferlens.report import build_report, compute_findings, load_results
from transferlens.report.figures import name_ticks
from transferlens.report.figures_analysis import plot_cka_layers, plot_distance_modules
from transferlens.report.figures_criticality import plot_rewind_heatmap
from transferlens.report.units import cka_layers, path_unit, study_units
from transferlens.results import table_path

UNITS = ("stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4", "blocks.5", "norm",
         "head")  # fmt: skip
STAGES = {"stem": "stem", "norm": "head", "head": "head"}  # blocks.i: "blocks"
LOWER = ("stem", "blocks.0", "blocks.1")
# The compared layers, deliberately listed out of depth order in cka.csv.
CKA_LAYERS = {  # layer: (stage, depth, shape, reduction, features)
    "head:in": ("head", 1.0, "64", "as is", 64),
    "patch_embed": ("stem", 0.0, "64x64", "tokens=all", 4096),
    "blocks.5": ("blocks", 0.875, "65x64", "tokens=all", 4160),
    "blocks.2": ("blocks", 0.5, "65x64", "tokens=all", 4160),
}
DEPTH_ORDER = ["patch_embed", "blocks.2", "blocks.5", "head:in"]


def stage_of(unit: str) -> str:
    return STAGES.get(unit, "blocks")


def _write(study: Path, name: str, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_csv(table_path(study / "results", name), index=False)


def rewind_cost(init: str, unit: str) -> float:
    """RI-T loses 20 points when a lower unit is rewound, P-T 2; any other unit costs 5
    (10 for the head): the finding holds only if the lower units are stem, blocks.0..1."""
    if unit == "head":
        return 0.10
    if unit in LOWER:
        return 0.20 if init == "RIT" else 0.02
    return 0.05


def make_vit_study(root: Path, *, new_tables: bool = True) -> Path:
    """The fixture study with ViT-like units in every per-unit table; ``new_tables``:
    also module_map.csv, cka_layers.csv and distance_stages.csv."""
    study = make_study(root)
    pairs = ("PT-PT", "RIT-RIT", "PT-P", "RIT-P", "PT-RIT")
    distance = []
    for target in TARGETS:
        for pair in pairs:
            whole = 3.0 if pair.startswith("PT") else 15.0
            distance.append(dict(target=target, pair=pair, module="all", l2=whole))
            distance += [
                dict(target=target, pair=pair, module=unit, l2=whole * (1 + i) / 20)
                for i, unit in enumerate(UNITS)
            ]
    _write(study, "distance", distance)
    criticality, paths = [], []
    for target in TARGETS:
        for init in ("PT", "RIT"):
            final = headline(True)[target][0 if init == "PT" else 1]
            for unit in UNITS:
                cost = rewind_cost(init, unit)
                criticality.append(
                    dict(target=target, init=init, module=unit, rewind_metric=final - cost,
                         criticality=0.1 + 10 * cost, alpha=0.5, sigma=0.2)
                )  # fmt: skip
            criticality.append(
                dict(target=target, init=init, module="network", rewind_metric=None,
                     criticality=5.0, alpha=None, sigma=None)
            )  # fmt: skip
            paths += [
                dict(target=target, init=init, path=path, distance=d, sigma=s, metric=final - s / 4)
                for path in ("direct", "checkpoints")
                for d in (0.0, 0.5, 1.0)
                for s in (0.0, 0.1)
            ]
    _write(study, "criticality", criticality)
    _write(study, "criticality_path", paths)
    cka = [
        dict(target=target, pair=pair, layer=layer, cka=value, cka_low=value - 0.02,
             cka_high=value + 0.02)
        for target in TARGETS
        for pair, base in (("PT-PT", 0.9), ("RIT-RIT", 0.4), ("PT-P", 0.8))
        for layer in CKA_LAYERS
        for value in [base - 0.1 * CKA_LAYERS[layer][1]]
    ]  # fmt: skip
    _write(study, "cka", cka)
    matrix = [
        dict(target=target, pair=pair, layer_a=a, layer_b=b, cka=0.5 if a != b else 0.9)
        for target in TARGETS
        for pair in ("PT-PT", "RIT-RIT")
        for a in CKA_LAYERS
        for b in CKA_LAYERS
    ]
    _write(study, "cka_matrix", matrix)
    if new_tables:
        depths = [i / (len(UNITS) - 1) for i in range(len(UNITS))]
        _write(study, "module_map", [
            dict(unit=unit, stage=stage_of(unit), depth=depth, lower=depth < 1 / 3,
                 members="cls_token;pos_embed;patch_embed" if unit == "stem" else unit)
            for unit, depth in zip(UNITS, depths)
        ])  # fmt: skip
        _write(study, "cka_layers", [
            dict(layer=layer, stage=stage, depth=depth, shape=shape, reduction=reduction,
                 features=features)
            for layer, (stage, depth, shape, reduction, features) in CKA_LAYERS.items()
        ])  # fmt: skip
        stages = []
        for row in distance:
            if row["module"] != "all":
                stages.append(dict(row, stage=stage_of(row["module"])))
        frame = pd.DataFrame(stages)
        frame["l2"] = frame["l2"] ** 2
        per_stage = frame.groupby(["target", "pair", "stage"], sort=False)["l2"].sum() ** 0.5
        per_stage = per_stage.reset_index()
        head = (per_stage["stage"] == "head") & per_stage["pair"].str.endswith("-P")
        per_stage.loc[head, "l2"] = np.nan  # the head is not shared with P
        per_stage.to_csv(table_path(study / "results", "distance_stages"), index=False)
    return study


def evidence(study: Path) -> tuple[str, str]:
    """The verdict and evidence of the rewinding finding: criticality.csv holds one model
    (the first seed) per arm, so the verdict is inconclusive (no spread across seeds)."""
    finding = next(f for f in compute_findings(study) if f.key == "rewind_lower_costs_rit_more")
    return finding.verdict, finding.evidence


# --- the lower modules ------------------------------------------------------------------------


def test_findings_take_the_lower_units_of_the_module_map(tmp_path: Path) -> None:
    study = make_vit_study(tmp_path / "study")
    verdict, text = evidence(study)
    assert verdict == "inconclusive"  # one model per arm: "[no spread across seeds]"
    assert text.startswith("lower modules stem, blocks.0, blocks.1; ")
    # Per model: its seed-0 final metric (the mean - 1 point) - the rewound metric.
    assert "near (RI-T loses 19.0 points vs P-T 1.0 points): +18.0 points [no spread" in text
    assert "far (RI-T loses 0.190 vs P-T 0.010): +0.180 [no spread" in text  # ROC-AUC
    assert list(study_units(load_results(study)).lower) == list(LOWER)


def test_the_maps_lower_column_decides_over_the_rule(tmp_path: Path) -> None:
    study = make_vit_study(tmp_path / "study")
    path = table_path(study / "results", "module_map")
    table = pd.read_csv(path)
    table["lower"] = table["unit"] == "stem"  # a map whose lower units are the stem alone
    table.to_csv(path, index=False)
    assert evidence(study)[1].startswith("lower modules stem; near (RI-T loses")
    critical = table_path(study / "results", "criticality")
    rows = pd.read_csv(critical)
    rows[rows["module"] != "stem"].to_csv(critical, index=False)  # the stem not rewound
    verdict, text = evidence(study)
    assert verdict == "not run"
    assert text == "no rewinding of the lower modules (stem)"


def test_without_the_map_the_rule_runs_on_the_rewound_modules(tmp_path: Path) -> None:
    study = make_vit_study(tmp_path / "study", new_tables=False)
    verdict, text = evidence(study)
    assert verdict == "inconclusive"  # the network row (nothing rewound) is no unit of the count
    assert text.startswith("lower modules stem, blocks.0, blocks.1; near (RI-T loses")
    units = study_units(load_results(study))
    assert units.source == "the module order of results/criticality.csv"
    assert units.lower_rule().endswith("depth < 1/3): stem, blocks.0, blocks.1")


def test_a_resnet_map_picks_what_the_rule_picked_before_it(tmp_path: Path) -> None:
    """The fixture's ResNet-like units with and without module_map.csv: same verdict and
    evidence (the demo's findings table does not change when the study writes the map)."""
    study = make_study(tmp_path / "study")
    before = evidence(study)
    units = ["conv1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "fc"]
    depths = [i / 5 for i in range(6)]
    _write(study, "module_map", [
        dict(unit=u, stage=u.split(".")[0] if "." in u else ("stem" if u == "conv1" else "head"),
             depth=d, lower=d < 1 / 3, members=u)
        for u, d in zip(units, depths)
    ])  # fmt: skip
    assert evidence(study) == before
    assert before[1].startswith("lower modules conv1, layer1.0; near (RI-T loses")


# --- the page -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    study = make_vit_study(tmp_path_factory.mktemp("vit") / "study")
    index = build_report(study)
    return index.parent, read_page(index)


def test_vit_like_report_states_the_rule_and_the_map(vit_report: tuple[Path, object]) -> None:
    folder, page = vit_report
    text = page.text
    rule = (
        "lower modules = the units in the first third of the depth (unit i of n at depth "
        "i/(n-1), depth < 1/3): stem, blocks.0, blocks.1"
    )
    assert f"In the finding on rewinding, {rule} (units from results/module_map.csv)" in text
    assert "module_map" in page.sections and "Not run" not in text
    assert "stem stem 0.00 yes cls_token, pos_embed, patch_embed" in text  # the map's table
    assert "blocks blocks.2 0.38 blocks.2" in text and "head head 1.00 head" in text
    for src in page.images:
        assert_nonblank_png(folder / src)
    assert {"distance_stages.png", "criticality_path.png"} <= set(page.images)


def test_vit_like_report_states_how_tokens_became_features(vit_report: tuple[Path, object]) -> None:
    _, page = vit_report
    text = page.text
    assert (
        "Features compared at each layer: patch_embed, blocks.2, blocks.5: token outputs "
        "[T, D] flattened to T x D features (tokens=all); head:in: used as they are" in text
    )
    assert "patch_embed stem 0.00 64x64 tokens=all 4096" in text  # the compared layers
    # The per-layer table runs input to output, not in cka.csv's order.
    assert "pair patch_embed blocks.2 blocks.5 head:in" in text


def test_vit_like_report_names_the_units_of_the_paths(vit_report: tuple[Path, object]) -> None:
    _, page = vit_report
    assert "stem (the unit the path walks)" in page.text
    assert "conv1" not in page.text
    # Distance per stage, input to output; the head is n/a between P and P-T (not shared).
    assert "target pair stem blocks head near PT-PT 0.15 1.77 1.81" in page.text
    assert "near PT-P 0.15 1.77 n/a" in page.text


def test_path_unit_follows_the_study_then_the_map(tmp_path: Path) -> None:
    study = make_vit_study(tmp_path / "study")
    assert path_unit(load_results(study)) == "stem"  # the map's first unit
    spec_path = study / "results" / "study.json"
    spec = json.loads(spec_path.read_text())
    spec["study"]["analyses"] = {"criticality": {"path_module": "blocks.0"}}
    spec_path.write_text(json.dumps(spec))
    assert path_unit(load_results(study)) == "blocks.0"
    plain = make_study(tmp_path / "plain")  # written before the map: a ResNet's conv1
    assert path_unit(load_results(plain)) == "conv1"


def test_a_study_without_the_new_tables_still_renders(tmp_path: Path) -> None:
    study = make_vit_study(tmp_path / "study", new_tables=False)
    page = read_page(build_report(study))
    assert "results/module_map.csv is missing (a study written before module maps)" in page.text
    assert "Not run" not in page.text  # the map is no analysis
    assert "(units from the module order of results/criticality.csv)" in page.text
    assert "Features compared at each layer" not in page.text
    assert "distance_stages.png" not in page.images
    # Layers keep cka.csv's order when cka_layers.csv does not give their depth.
    assert "pair head:in patch_embed blocks.5 blocks.2" in page.text


# --- figures with many units ----------------------------------------------------------------


def test_cka_figure_runs_by_depth_with_stage_labels(tmp_path: Path) -> None:
    results = load_results(make_vit_study(tmp_path / "study"))
    layers = cka_layers(results)
    order = layers.order(results.get("cka")["layer"])
    assert order == DEPTH_ORDER
    figure = plot_cka_layers(results.get("cka"), ["near"], order, layers.labels())
    (axes,) = figure.axes
    shown = [label.get_text() for label in axes.get_xticklabels()]
    assert shown == ["patch_embed (stem)", "blocks.2", "blocks.5", "head:in"]


def test_many_unit_names_stay_legible() -> None:
    """A ViT-B's 14 units: ticks turned upright and smaller, stages named on top."""
    units = ["stem", *[f"blocks.{i}" for i in range(12)], "head"]
    rows = [
        dict(target="near", pair="PT-PT", module=unit, l2=float(i)) for i, unit in enumerate(units)
    ]
    stages = {unit: stage_of(unit) for unit in units}
    figure = plot_distance_modules(pd.DataFrame(rows), ["near"], units, stages)
    (axes,) = figure.axes
    labels = axes.get_xticklabels()
    assert [label.get_text() for label in labels] == units
    assert {label.get_rotation() for label in labels} == {90.0}
    assert {label.get_fontsize() for label in labels} == {6.0}
    top = [child for child in axes.get_children() if type(child).__name__ == "SecondaryAxis"]
    assert [t.get_text() for t in top[0].get_xticklabels()] == ["stem", "blocks", "head"]
    figure.draw_without_rendering()  # the constrained layout fits them
    resnet = Figure().add_subplot()
    name_ticks(resnet, ["conv1", "layer1.0", "fc"])  # a few names stay gently slanted
    assert {label.get_rotation() for label in resnet.get_xticklabels()} == {30.0}


def test_rewind_heatmap_runs_in_unit_order_with_the_lower_units_bold(tmp_path: Path) -> None:
    results = load_results(make_vit_study(tmp_path / "study"))
    units = study_units(results)
    criticality = results.get("criticality").iloc[::-1]  # rows in any order
    figure = plot_rewind_heatmap(criticality, list(TARGETS), TASKS, units.units, units.lower)
    axes = next(a for a in figure.axes if a.get_ylabel().startswith("module rewound"))
    labels = axes.get_yticklabels()
    assert [label.get_text() for label in labels] == list(UNITS)
    bold = [label.get_text() for label in labels if label.get_fontweight() == "bold"]
    assert bold == list(LOWER)
