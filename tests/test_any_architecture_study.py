"""Whole studies on architectures other than our ResNets, run as a user runs them
(``transferlens run``, then ``transferlens report``): a tiny timm ViT, and someone else's
CIFAR ResNet named by import path (head ``linear``, pooling by a function)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_CRITICALITY
from transferlens.cli import main

TESTS = Path(__file__).resolve().parent
ALL_ANALYSES = {
    "reuse": {},
    "mistakes": {"n_bootstrap": 20},
    "cka": {"n_bootstrap": 0},
    "distance": {},
    "interpolation": {"points": 3},
    "criticality": TINY_CRITICALITY,
    "pretrain_checkpoints": {},
}
TINY_VIT = {
    "name": "timm:vit_tiny_patch16_224",
    "kwargs": {"img_size": 8, "patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2},
}


def table(study: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(study / "results" / f"{name}.csv")


def run_and_report(study_file: Path, out: Path) -> None:
    assert main(["run", str(study_file), "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "report" / "index.html").is_file()


def test_a_vit_study_runs_every_analysis_and_reports(tmp_path, tiny_study, study_file):
    pytest.importorskip("timm")
    study = tiny_study(
        model=TINY_VIT,
        seeds=[0, 1],
        block_shuffle={"targets": ["real"], "block_sizes": [None, 4, 2], "augment": False},
        pretrain_checkpoints={"targets": ["real"], "epochs": [0, "final"]},
        analyses=ALL_ANALYSES,
    )
    out = tmp_path / "vit"
    run_and_report(study_file(study), out)

    units = table(out, "module_map")
    assert list(units["unit"]) == ["stem", "blocks.0", "blocks.1", "norm", "head"]
    assert list(units["unit"][units["lower"]]) == ["stem", "blocks.0"]  # depth < 1/3
    layers = table(out, "cka_layers")
    assert list(layers["layer"]) == ["norm_pre", "blocks.0", "blocks.1", "head:in"]
    # 2 x 2 patches and the class token, 16 wide: all tokens flattened by default.
    assert list(layers["features"]) == [80, 80, 80, 16]
    cka = table(out, "cka")
    assert set(cka["layer"]) == set(layers["layer"])
    assert cka["cka"].between(-1e-6, 1 + 1e-6).all()
    distance = table(out, "distance")
    assert set(distance["module"]) == {"all", *units["unit"]}
    stages = table(out, "distance_stages")
    assert set(stages["stage"]) == set(units["stage"])
    criticality = table(out, "criticality")
    assert set(criticality["module"]) == {*units["unit"], "network"}
    assert set(table(out, "reuse")["block_size"].dropna()) == {4, 2}
    assert not table(out, "barriers").empty
    page = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert "blocks.0" in page and "conv1" not in page


def test_a_users_own_class_by_import_path_runs_a_study(
    tmp_path, tiny_study, study_file, monkeypatch
):
    # The class is imported from the current folder in this process and in every worker.
    monkeypatch.chdir(TESTS)
    study = tiny_study(
        model={"name": "user_models.cifar_resnet:CifarResNet", "kwargs": {"width": 4}},
        seeds=[0, 1],
        analyses=ALL_ANALYSES,
    )
    out = tmp_path / "user"
    run_and_report(study_file(study), out)

    units = table(out, "module_map")
    assert list(units["unit"]) == ["conv1", "bn1", "layer1.0", "layer2.0", "layer3.0", "linear"]
    layers = table(out, "cka_layers")
    assert layers["layer"].iloc[-1] == "linear:in"
    assert layers["features"].iloc[-1] == 16  # the pooled features of width 4 x 4
    criticality = table(out, "criticality")
    assert "linear" in set(criticality["module"])
