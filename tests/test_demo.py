"""``transferlens demo --fast``: the whole pipeline, end to end, once per session.

The fast demo (``studies/demo-fast.yaml``) runs every stage of the full demo on a few
hundred tiny images; it takes about half a minute on two cores. Its numbers mean
nothing (nothing converges), so these tests check the pipeline's contract -- exit
codes, the nine result tables with the columns of DESIGN.md, the report, the findings
table, reuse on a second run -- and that the fast study really has the full one's stages.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from transferlens.cli import main
from transferlens.commands.demo import demo_study_file
from transferlens.study import load_study, plan_study

# DESIGN.md: the columns every results table starts with (analyses may add more).
TABLE_COLUMNS = {
    "runs": [
        "run_id",
        "kind",
        "init",
        "target",
        "seed",
        "block_size",
        "pretrain_epoch",
        "epochs",
        "final_test_metric",
        "best_test_metric",
        "optimization_speed",
        "status",
    ],
    "reuse": [
        "target",
        "block_size",
        "metric_pt",
        "metric_rit",
        "relative_gap",
        "speed_pt",
        "speed_rit",
    ],
    "mistakes": [
        "target",
        "pair",
        "n",
        "both_right",
        "both_wrong",
        "only_first_wrong",
        "only_second_wrong",
        "kappa",
        "kappa_low",
        "kappa_high",
    ],
    "cka": ["target", "pair", "layer", "cka", "cka_low", "cka_high"],
    "distance": ["target", "pair", "module", "l2"],
    "interpolation": ["target", "pair", "lam", "loss", "metric"],
    "barriers": ["target", "pair", "loss_barrier", "metric_barrier"],
    "criticality": [
        "target",
        "init",
        "module",
        "rewind_metric",
        "criticality",
        "alpha",
        "sigma",
    ],
    "pretrain_checkpoints": [
        "target",
        "pretrain_epoch",
        "final_test_metric",
        "optimization_speed",
    ],
}
PAIRS = {"PT-PT", "PT-RIT", "RIT-RIT", "PT-P", "RIT-P"}
TARGETS = {"real", "clipart", "quickdraw"}


@dataclass
class DemoRun:
    code: int
    stdout: str
    stderr: str


def run_demo(*argv: str) -> DemoRun:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["demo", *argv])
    return DemoRun(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoRun]:
    """One fast demo for the whole module: (study folder, what the command returned)."""
    folder = tmp_path_factory.mktemp("demo") / "study"
    return folder, run_demo("--fast", "--out", str(folder), "--no-progress")


def table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / "results" / f"{name}.csv", dtype={"block_size": "Int64"})


def test_fast_demo_succeeds_and_prints_findings_and_report(demo) -> None:
    folder, result = demo
    assert result.code == 0, result.stderr[-2000:]
    assert "finding" in result.stdout and "verdict" in result.stdout
    assert "(of 12 findings; rule: docs/findings.md)" in result.stdout
    # The verdicts the demo printed are the ones results/findings.csv holds.
    findings = pd.read_csv(folder / "results" / "findings.csv")
    for verdict in findings.drop_duplicates("finding")["verdict"]:
        assert verdict in ("reproduced", "contradicted", "inconclusive", "not run")
    counts = findings.drop_duplicates("finding")["verdict"].value_counts()
    assert f"{counts.get('reproduced', 0)} reproduced," in result.stdout
    index = folder / "report" / "index.html"
    assert index.is_file() and index.stat().st_size > 0
    assert f"report: {index}" in result.stdout
    # Progress names the runs it trains and counts what is left (plain mode).
    assert "started" in result.stderr and "P source seed 0" in result.stderr
    # ... after a header line (study, folder, runs, workers), with the time left per epoch
    # and the steps of the long analyses.
    header = result.stderr.splitlines()[0]
    assert header.startswith(f"demo: study demo-fast in {folder}: ")
    assert " already complete), " in header and " at once (cpu#0" in header
    assert header.endswith(", then 7 analyses and the report")
    assert ", run eta " in result.stderr and ", study eta " in result.stderr
    assert "[analysis 7/7] criticality: real PT module 1/6 conv1" in result.stderr
    assert "[analysis 4/7] cka: real: target 1/3" in result.stderr


@pytest.mark.parametrize("name", list(TABLE_COLUMNS))
def test_every_table_exists_with_the_design_columns(demo, name: str) -> None:
    folder, result = demo
    assert result.code == 0
    frame = table(folder, name)
    assert not frame.empty
    columns = TABLE_COLUMNS[name]
    assert list(frame.columns[: len(columns)]) == columns
    if "pair" in frame.columns:
        assert set(frame["pair"]) <= PAIRS
    if "target" in frame.columns:
        assert set(frame["target"]) <= TARGETS | {"source"}
    if "init" in frame.columns and name != "runs":
        assert set(frame["init"]) <= {"PT", "RIT"}


def test_runs_table_holds_every_planned_run_complete(demo) -> None:
    folder, _ = demo
    runs = table(folder, "runs")
    plan = plan_study(load_study(demo_study_file(fast=True)))
    assert set(runs["run_id"]) == {run.run_id for run in plan}
    assert (runs["status"] == "complete").all()
    assert runs["kind"].value_counts()["source"] == 1
    targets = runs[runs["kind"] == "target"]
    assert set(targets["init"]) == {"PT", "RIT"}
    assert set(targets["target"]) == TARGETS
    metrics = targets[["final_test_metric", "best_test_metric", "optimization_speed"]]
    assert ((metrics >= 0) & (metrics <= 1)).all().all()
    # Pixel shuffle is block size 0, unshuffled is empty; P-T runs name their P epoch.
    assert 0 in set(targets["block_size"].dropna()) and targets["block_size"].isna().any()
    assert targets.loc[targets["init"] == "PT", "pretrain_epoch"].notna().all()


def test_reuse_and_checkpoint_tables_cover_the_sweeps(demo) -> None:
    folder, _ = demo
    study = load_study(demo_study_file(fast=True))
    reuse = table(folder, "reuse")
    sizes = {size for size in reuse["block_size"].dropna()}
    assert sizes == {size for size in study.block_shuffle.block_sizes if size is not None}
    assert reuse["block_size"].isna().any()
    checkpoints = table(folder, "pretrain_checkpoints")
    final = study.training.pretrain.epochs
    wanted = {final if epoch == "final" else epoch for epoch in study.pretrain_checkpoints.epochs}
    assert set(checkpoints["pretrain_epoch"]) == wanted
    assert set(checkpoints["target"]) == set(study.pretrain_checkpoints.targets)


def test_second_run_reuses_everything(demo) -> None:
    folder, first = demo
    assert first.code == 0
    again = run_demo("--fast", "--out", str(folder), "--no-progress")
    assert again.code == 0, again.stderr[-2000:]
    assert "(0 runs trained now" in again.stdout
    planned = len(plan_study(load_study(demo_study_file(fast=True))))
    assert f"{planned} runs ({planned} already complete)" in again.stderr
    assert "started" not in again.stderr  # no run was handed to a worker


def test_bad_jobs_is_bad_input(tmp_path: Path) -> None:
    result = run_demo("--fast", "--out", str(tmp_path / "x"), "--jobs", "0")
    assert result.code == 2
    assert "--jobs" in result.stderr
    assert not (tmp_path / "x").exists()


def _stages(fast: bool) -> dict:
    study = load_study(demo_study_file(fast))
    return {
        "source": study.source.data.domain,
        "targets": [(t.label, t.data.domain) for t in study.targets],
        "analyses": sorted(study.analyses),
        "block_shuffle_targets": study.block_shuffle.targets,
        "checkpoint_targets": study.pretrain_checkpoints.targets,
        "arms": sorted(name for name in ("pretrain", "pt", "rit") if getattr(study.training, name)),
        "model": study.model.name,
    }


def test_fast_demo_has_the_full_demos_stages() -> None:
    assert _stages(fast=False) == _stages(fast=True)
    for fast in (False, True):
        study = load_study(demo_study_file(fast))
        assert len(study.seeds) >= 2
        assert len(study.analyses) == 7
        sizes = study.block_shuffle.block_sizes
        assert None in sizes and 0 in sizes and 1 in sizes  # unshuffled ... pixel shuffle
        assert len(study.pretrain_checkpoints.epochs) >= 3
        assert "final" in study.pretrain_checkpoints.epochs
        assert 0 in study.pretrain_checkpoints.epochs


def test_full_demo_trains_rit_longer_and_faster_than_pt() -> None:
    """The paper's protocol: RI-T gets more epochs and a higher learning rate than P-T."""
    training = load_study(demo_study_file(fast=False)).training
    assert training.rit.epochs > training.pt.epochs
    assert training.rit.lr > training.pt.lr
