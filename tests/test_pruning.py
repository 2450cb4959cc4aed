"""Checkpoint pruning: the plan decides per run which epochs it keeps; training deletes
the rest (never the latest, which resuming needs); every analysis still finds what it
reads, and its numbers do not change."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from conftest import TINY_CRITICALITY, TINY_STUDY, merged
from test_threads import Crash, crash_after, tiny_spec
from transferlens.io import atomic_write_json
from transferlens.results import TABLE_COLUMNS
from transferlens.study.execute import execute_run
from transferlens.study.loading import parse_study
from transferlens.study.plan import plan_study, walked_runs
from transferlens.study.runner import execute_plan, open_study
from transferlens.study.store import StudyStore
from transferlens.train import available_epochs, checkpoint_path, train
from transferlens.train.checkpoints import RESUME_FILE

# Two seeds (walked runs are the first seed's), a checkpoint sweep from epoch 1 of a
# 3-epoch P, a block sweep, and every analysis at its cheapest.
STUDY = merged(
    TINY_STUDY,
    seeds=[0, 1],
    training={"pretrain": {"epochs": 3}, "pt": {"epochs": 2}, "rit": {"epochs": 3}},
    block_shuffle={"targets": ["real"], "block_sizes": [None, 2]},
    pretrain_checkpoints={"targets": ["real"], "epochs": [1, "final"], "seeds": [0]},
    analyses={
        "reuse": {},
        "mistakes": {"n_bootstrap": 10},
        "cka": {"n_bootstrap": 5},
        "distance": {},
        "interpolation": {"points": 3},
        "criticality": TINY_CRITICALITY,
        "pretrain_checkpoints": {},
    },
)
# Tables holding wall times: not comparable between two executions.
TIMED = {"epochs", "provenance"}


def _plan(keep: str):
    study = merged(STUDY, keep_checkpoints=keep)
    return plan_study(parse_study(study, "study.yaml"), "study.yaml")


def test_the_plan_decides_which_epochs_each_run_keeps():
    plan, everything = _plan("needed"), _plan("all")
    assert list(plan.runs) == list(everything.runs)  # an execution setting: ids unchanged
    assert all(run.keep_epochs is None for run in everything)
    assert everything.study.keep_checkpoints == "all"  # the default keeps every checkpoint
    source = plan.source_run
    assert source is not None and source.keep_epochs == (0, 1, 3)  # init, sweep, final
    walked = {run.run_id for run in walked_runs(plan)}
    assert {(plan[r].meta.init, plan[r].meta.seed) for r in walked} == {("PT", 0), ("RIT", 0)}
    for run in plan:
        if run.run_id in walked:
            assert run.keep_epochs is None  # criticality walks every checkpoint
        elif run.meta.kind == "target":
            assert run.keep_epochs == (0, run.epochs)


def test_training_keeps_the_listed_epochs_the_latest_and_the_same_numbers(tmp_path):
    spec = tiny_spec(4)
    train(spec, tmp_path / "all", progress=False)
    seen: list[list[int]] = []

    def watch(epoch: int, record: dict) -> None:
        seen.append(available_epochs(tmp_path / "pruned"))

    train(spec, tmp_path / "pruned", progress=False, on_epoch=watch, keep_epochs=[0, 2])
    # While training: the kept epochs and the latest one, nothing else.
    assert seen == [[0], [0, 1], [0, 2], [0, 2, 3], [0, 2, 4]]
    assert available_epochs(tmp_path / "pruned") == [0, 2, 4]
    assert not (tmp_path / "pruned" / RESUME_FILE).exists()  # complete: never resumed
    assert (tmp_path / "all" / RESUME_FILE).exists()
    for epoch in (0, 2, 4):
        pruned = load_file(str(checkpoint_path(tmp_path / "pruned", epoch)))
        kept = load_file(str(checkpoint_path(tmp_path / "all", epoch)))
        assert all(pruned[key].equal(kept[key]) for key in kept)


def test_a_pruned_run_resumes_from_its_latest_checkpoint(tmp_path):
    spec = tiny_spec(3)
    train(spec, tmp_path / "straight", progress=False)
    with pytest.raises(Crash):
        train(spec, tmp_path / "pruned", progress=False, on_epoch=crash_after(2), keep_epochs=[0])
    assert available_epochs(tmp_path / "pruned") == [0, 2]
    summary = train(spec, tmp_path / "pruned", progress=False, keep_epochs=[0])
    assert summary.resumed_from == 2 and available_epochs(tmp_path / "pruned") == [0, 3]
    final = load_file(str(checkpoint_path(tmp_path / "pruned", 3)))
    straight = load_file(str(checkpoint_path(tmp_path / "straight", 3)))
    assert all(final[key].equal(straight[key]) for key in straight)


def test_a_source_checkpoint_pruned_earlier_fails_its_fine_tune_in_one_line(tmp_path):
    plan = _plan("needed")
    store = StudyStore(tmp_path / "study")
    source = plan.source_run
    assert source is not None
    # The source, complete without epoch 1 (as a plan without the sweep left it).
    atomic_write_json(store.run_dir(source.run_id) / "complete.json", {"epochs": 3})
    [from_epoch_1] = plan.select(init="PT", pretrain_epoch=1)
    outcome = execute_run(store, from_epoch_1)
    assert outcome.status == "failed" and "\n" not in (outcome.error or "")
    assert f"source run {source.run_id} is complete without a checkpoint of epoch 1" in (
        outcome.error or ""
    )
    assert not (store.run_dir(from_epoch_1.run_id) / "spec.json").exists()  # never trained


def _execute(study_file: Path, out: Path) -> dict[str, pd.DataFrame]:
    plan, store = open_study(study_file, out=out)
    report = execute_plan(plan, store, devices="cpu", jobs=1, progress=False)
    assert report.ok, (report.failed, report.analyses)
    assert report.analyses.startswith("complete")
    return {
        path.stem: pd.read_csv(path)
        for path in sorted(store.results_dir.glob("*.csv"))
        if path.stem not in TIMED
    }


def test_a_pruned_study_runs_every_analysis_with_the_same_numbers(tmp_path, study_file):
    pruned = _execute(study_file(merged(STUDY, keep_checkpoints="needed")), tmp_path / "pruned")
    everything = _execute(study_file(STUDY, name="all.yaml"), tmp_path / "all")
    analysed = set(TABLE_COLUMNS) - TIMED - {"targets"}
    assert analysed <= set(pruned)  # every table was written
    assert set(pruned) == set(everything)
    for name, table in everything.items():
        pd.testing.assert_frame_equal(pruned[name], table, check_exact=True, obj=name)
    files = {
        label: sum(1 for _ in (tmp_path / label / "runs").rglob("*.safetensors"))
        for label in ("pruned", "all")
    }
    assert files["pruned"] < files["all"]
