"""The study's module map: written to results/module_map.csv once, and the units and
stages the distance and criticality tables report (a tiny ResNet study, as the demo)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY_CRITICALITY, TINY_STUDY
from transferlens.cli import main
from transferlens.models import build_model, criticality_modules
from transferlens.models.module_map import module_map
from transferlens.results import TABLE_COLUMNS


def table(study: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(study / "results" / f"{name}.csv")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ResNet study (one seed: P-T, RI-T and P) with distance and criticality,
    the rewinding paths drawn for ``layer1.0``."""
    folder = tmp_path_factory.mktemp("units")
    study = {
        **TINY_STUDY,
        "analyses": {
            "distance": {},
            "criticality": {**TINY_CRITICALITY, "path_module": "layer1.0"},
        },
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    out = folder / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--no-report"]) == 0
    return out


def test_module_map_csv_holds_the_studys_units(finished):
    frame = table(finished, "module_map")
    assert tuple(frame.columns) == TABLE_COLUMNS["module_map"]
    model = build_model("fixup_resnet10", 2, stem="cifar", width=4)
    assert list(frame["unit"]) == criticality_modules(model)  # the paper's modules
    expected = module_map(model).to_frame()
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)


def test_distance_stages_are_the_root_sum_of_squares_of_their_units(finished):
    units = table(finished, "module_map")
    distance = table(finished, "distance")
    stages = table(finished, "distance_stages")
    leading = TABLE_COLUMNS["distance_stages"]
    assert tuple(stages.columns[: len(leading)]) == leading
    assert list(stages.columns[len(leading) :]) == ["l2_seeds_low", "l2_seeds_high", "n_pairs"]
    assert set(distance["module"]) == {"all", *units["unit"]}
    # One seed: every pair is one comparison, so the identity holds for the means too.
    for (target, pair), group in stages.groupby(["target", "pair"]):
        rows = distance[(distance["target"] == target) & (distance["pair"] == pair)]
        l2 = dict(zip(rows["module"], rows["l2"]))
        for stage, value in zip(group["stage"], group["l2"]):
            members = units.loc[units["stage"] == stage, "unit"]
            parts = [l2[unit] for unit in members]
            if any(math.isnan(part) for part in parts):
                assert math.isnan(value), (pair, stage)  # the head between P and P-T
            else:
                assert value == pytest.approx(math.sqrt(sum(p * p for p in parts)), rel=1e-12)
    head = stages[(stages["pair"] == "PT-P") & (stages["stage"] == "head")]
    assert len(head) == 1 and math.isnan(head["l2"].iloc[0])


def test_criticality_reports_each_unit_and_draws_the_chosen_paths(finished):
    units = table(finished, "module_map")
    criticality = table(finished, "criticality")
    for init in ("PT", "RIT"):
        rows = criticality[criticality["init"] == init]
        assert list(rows["module"]) == [*units["unit"], "network"]
    paths = table(finished, "criticality_path")
    assert set(paths["init"]) == {"PT", "RIT"} and not paths.empty


def test_an_unknown_path_module_is_one_line_naming_it(tmp_path, finished, capsys):
    study = {**TINY_STUDY, "analyses": {"criticality": {**TINY_CRITICALITY, "path_module": "nope"}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    shutil.copytree(finished / "runs", out / "runs")  # the same runs: nothing trains
    code = main(["run", str(path), "--out", str(out), "--no-progress", "--no-report"])
    said = capsys.readouterr()
    assert code == 1
    assert "analyses.criticality.path_module: module 'nope' does not exist" in said.out
    assert "module 1/" not in said.err  # refused before any search began


def test_the_studys_own_modules_make_the_units(tmp_path, finished):
    model = {**TINY_STUDY["model"], "modules": ["conv1", "layer*", "fc"]}
    study = {**TINY_STUDY, "model": model, "analyses": {"distance": {}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    shutil.copytree(finished / "runs", out / "runs")
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--no-report"]) == 0
    units = ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert list(table(out, "module_map")["unit"]) == units
    distance = table(out, "distance")
    assert list(distance.loc[distance["pair"] == "PT-P", "module"]) == ["all", *units]


def test_a_rerun_skips_finished_analyses_and_recomputes_one_missing_a_table(finished, tmp_path):
    """The manifest skips an analysis whose inputs are unchanged, unless a table this
    version writes is missing (a folder from a version that wrote fewer tables)."""
    from transferlens.study.analyses.run import run_analyses
    from transferlens.study.store import StudyStore

    study = tmp_path / "copy"
    shutil.copytree(finished, study)
    store = StudyStore(study)
    plan = store.load_plan()
    heard: list[str] = []
    run_analyses(plan, store, progress=heard.append)
    assert not [line for line in heard if line.endswith("...")]  # nothing recomputed
    before = {name: table(study, name) for name in ("distance", "criticality")}
    # As an older version left it: no distance_pairs table, and none in the manifest.
    manifest_path = study / "results" / "analyses_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["distance"]["tables"].remove("distance_pairs")
    manifest_path.write_text(json.dumps(manifest))
    (study / "results" / "distance_pairs.csv").unlink()
    heard.clear()
    run_analyses(plan, store, progress=heard.append)
    started = [line for line in heard if line.endswith("...")]
    assert len(started) == 1 and "distance" in started[0]
    assert (study / "results" / "distance_pairs.csv").is_file()
    for name, frame in before.items():
        pd.testing.assert_frame_equal(table(study, name), frame)
