"""`transferlens demo --fast`: every stage of the demo, end to end, at toy sizes."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from transferlens.cli import main
from transferlens.commands.demo import demo_study_file

TABLES = {
    "runs": ("run_id", "kind", "init", "target", "seed", "block_size", "pretrain_epoch",
             "epochs", "final_test_metric", "best_test_metric", "optimization_speed", "status"),
    "reuse": ("target", "block_size", "metric_pt", "metric_rit", "relative_gap", "speed_pt",
              "speed_rit"),
    "mistakes": ("target", "pair", "n", "both_right", "both_wrong", "only_first_wrong",
                 "only_second_wrong", "kappa", "kappa_low", "kappa_high"),
    "cka": ("target", "pair", "layer", "cka", "cka_low", "cka_high"),
    "distance": ("target", "pair", "module", "l2"),
    "interpolation": ("target", "pair", "lam", "loss", "metric"),
    "barriers": ("target", "pair", "loss_barrier", "metric_barrier"),
    "criticality": ("target", "init", "module", "rewind_metric", "criticality", "alpha", "sigma"),
    "pretrain_checkpoints": ("target", "pretrain_epoch", "final_test_metric",
                             "optimization_speed"),
}  # fmt: skip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    return tmp_path_factory.mktemp("demo") / "study"


def test_fast_demo_writes_every_table_and_the_report(demo_run, capsys):
    code = main(["demo", "--fast", "--out", str(demo_run), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    results = demo_run / "results"
    for name, columns in TABLES.items():
        table = pd.read_csv(results / f"{name}.csv")
        assert tuple(table.columns[: len(columns)]) == columns, name
        assert len(table) > 0, name
    runs = pd.read_csv(results / "runs.csv")
    assert set(runs["status"]) == {"complete"}
    assert set(runs.loc[runs["kind"] == "target", "target"]) == {"real", "clipart", "quickdraw"}
    assert (demo_run / "report" / "index.html").is_file()
    assert "finding" in printed.lower() and "report:" in printed

    # Running it again reuses every run and analysis.
    assert main(["demo", "--fast", "--out", str(demo_run), "--no-progress"]) == 0
    assert "(0 runs trained now)" in capsys.readouterr().out


def test_fast_demo_has_the_stages_of_the_full_demo():
    full = yaml.safe_load(demo_study_file(fast=False).read_text())
    fast = yaml.safe_load(demo_study_file(fast=True).read_text())
    for key in ("source", "block_shuffle", "pretrain_checkpoints"):
        assert key in full and key in fast, key
    assert set(fast["analyses"]) == set(full["analyses"])
    assert [t["label"] for t in fast["targets"]] == [t["label"] for t in full["targets"]]
    assert len(fast["seeds"]) >= 2 and len(full["seeds"]) >= 2
