"""The study folder: locks, run states, failures, runs.csv, study.json and status."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY_STUDY, merged
from transferlens.cli import main
from transferlens.io import append_jsonl, atomic_write_json
from transferlens.study.loading import parse_study
from transferlens.study.locks import RunLock, is_locked
from transferlens.study.plan import Dependency, plan_study
from transferlens.study.runs_table import COLUMNS, write_runs_table
from transferlens.study.status import study_status
from transferlens.study.store import StudyStore

# Longer arms than the tiny study's (the tests log epochs up to 3), both sweeps, CKA.
STUDY = merged(
    TINY_STUDY,
    training={"pretrain": {"epochs": 3}, "pt": {"epochs": 2}, "rit": {"epochs": 2}},
    block_shuffle={"targets": ["real"], "block_sizes": [None, 0, 2]},
    pretrain_checkpoints={"targets": ["real"], "epochs": [1, "final"]},
    analyses={"cka": {}},
)


@pytest.fixture(scope="module")
def plan():
    return plan_study(parse_study(STUDY, "s.yaml"), "s.yaml")


def _complete(store: StudyStore, run_id: str, epochs: int, metric: float) -> None:
    folder = store.run_dir(run_id)
    for epoch in range(epochs + 1):
        append_jsonl(folder / "metrics.jsonl", {"epoch": epoch, "test_metric": metric})
    atomic_write_json(
        folder / "complete.json",
        {"final_test_metric": metric, "best_test_metric": metric + 0.1, "optimization_speed": 0.5},
    )


def test_run_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / "locks" / "r.lock"
    first, second = RunLock(path), RunLock(path)
    assert first.try_acquire()
    assert not second.try_acquire()
    assert is_locked(path)
    first.release()
    assert not is_locked(path)
    assert second.try_acquire()
    second.release()


def test_lock_of_a_killed_process_is_free(tmp_path):
    path = tmp_path / "r.lock"
    code = (
        "import sys, time; from transferlens.study.locks import RunLock\n"
        f"lock = RunLock({str(path)!r}); assert lock.try_acquire()\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert is_locked(path)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert not is_locked(path)  # the kernel dropped it
    finally:
        if holder.poll() is None:
            holder.kill()


def test_run_states(tmp_path, plan):
    store = StudyStore(tmp_path)
    run_id = plan.source_run.run_id
    assert store.state(run_id) == "pending"
    lock = store.lock(run_id)
    assert lock.try_acquire()
    assert store.state(run_id) == "running"
    try:
        raise RuntimeError("out of memory\nwhile doing\tthings")
    except RuntimeError as error:
        line = store.record_failure(run_id, error)
    lock.release()
    assert line == "RuntimeError: out of memory while doing things"
    assert store.state(run_id) == "failed"
    assert store.failure(run_id)["error"] == line
    assert "Traceback" in (store.run_dir(run_id) / "traceback.txt").read_text()
    store.clear_failure(run_id)
    assert store.state(run_id) == "pending"
    _complete(store, run_id, 3, 0.5)
    assert store.state(run_id) == "complete" and store.last_epoch(run_id) == 3


def test_checkpoint_ready_only_when_final(tmp_path):
    store = StudyStore(tmp_path)
    folder = store.run_dir("source-x")
    dependency = Dependency("source-x", 2)
    assert not store.checkpoint_ready(dependency)
    (folder / "checkpoints").mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, str(folder / "checkpoints" / "epoch_0002.safetensors"))
    assert not store.checkpoint_ready(dependency)  # no resume state: may be rewritten
    save_file({"w": torch.zeros(1)}, str(folder / "resume.safetensors"), metadata={"epoch": "1"})
    assert not store.checkpoint_ready(dependency)  # a restart would redo epoch 2
    save_file({"w": torch.zeros(1)}, str(folder / "resume.safetensors"), metadata={"epoch": "2"})
    assert store.checkpoint_ready(dependency)
    assert not store.checkpoint_ready(Dependency("source-x", 3))
    atomic_write_json(folder / "complete.json", {})
    assert store.checkpoint_ready(Dependency("source-x", 3))


def test_runs_csv_columns_and_values(tmp_path, plan):
    store = StudyStore(tmp_path)
    source = plan.source_run.run_id
    _complete(store, source, 3, 0.25)
    failed = plan.select(init="RIT", group="main")[0].run_id
    store.record_failure(failed, "ValueError: bad")
    path = write_runs_table(plan, store)
    table = pd.read_csv(path, keep_default_na=False)
    assert tuple(table.columns[: len(COLUMNS)]) == COLUMNS
    assert len(table) == len(plan) and list(table.run_id) == list(plan.runs)
    rows = table.set_index("run_id")
    assert rows.loc[source, "kind"] == "source" and rows.loc[source, "init"] == ""
    assert float(rows.loc[source, "final_test_metric"]) == 0.25
    assert float(rows.loc[source, "best_test_metric"]) == pytest.approx(0.35)
    assert rows.loc[source, "status"] == "complete"
    assert rows.loc[failed, "status"] == "failed" and rows.loc[failed, "error"] == "ValueError: bad"
    for run in plan:
        row = rows.loc[run.run_id]
        expected_block = "" if run.meta.block_size is None else str(run.meta.block_size)
        assert str(row["block_size"]) == expected_block
        expected_epoch = "" if run.meta.pretrain_epoch is None else str(run.meta.pretrain_epoch)
        assert str(row["pretrain_epoch"]) == expected_epoch
        assert row["init"] == {"source": ""}.get(run.meta.kind, run.meta.init)
    assert set(table.block_size) == {"", "0", "2"}
    assert "0" in set(table[table.init == "PT"].block_size)  # pixel shuffle is 0, not empty


def test_pt_runs_find_their_source_in_the_runs_folder(tmp_path, plan):
    store = StudyStore(tmp_path / "study")
    run = plan.select(init="PT", group="main")[0]
    assert run.spec.init.run == run.depends_on.run_id  # a run id, not a path
    spec = store.runnable_spec(run.spec)
    assert spec.init.source_dir() == store.runs_dir / run.depends_on.run_id
    # Where the runs folder is stays out of the spec: same JSON, same run id, same resume check.
    assert spec.model_dump(mode="json") == run.spec.model_dump(mode="json")
    assert spec.comparable() == run.spec.comparable()
    rit = plan.select(init="RIT")[0]
    assert store.runnable_spec(rit.spec) is rit.spec


def test_study_json_round_trip(tmp_path, plan):
    store = StudyStore(tmp_path)
    store.write_study(plan, source_file="s.yaml")
    listed = store.planned_runs()
    assert [run_id for run_id, _, _ in listed] == list(plan.runs)
    assert [meta for _, meta, _ in listed] == [run.meta for run in plan]
    assert [dep for _, _, dep in listed] == [run.depends_on for run in plan]
    assert list(store.load_plan().runs) == list(plan.runs)


def test_status_shows_states_errors_and_epochs(tmp_path, plan, capsys):
    store = StudyStore(tmp_path)
    store.write_study(plan)
    ids = list(plan.runs)
    _complete(store, ids[0], 3, 0.5)
    store.record_failure(ids[1], "RuntimeError: CUDA out of memory")
    running = store.lock(ids[2])
    assert running.try_acquire()
    append_jsonl(store.run_dir(ids[2]) / "metrics.jsonl", {"epoch": 0})
    append_jsonl(store.run_dir(ids[2]) / "metrics.jsonl", {"epoch": 1})
    try:
        text = study_status(store)
        assert main(["status", str(tmp_path)]) == 0
        assert capsys.readouterr().out.strip() == text
    finally:
        running.release()
    lines = text.splitlines()
    counts = {
        match.group(1): int(match.group(2))
        for match in (
            re.match(r"^  (complete|running|pending|failed) +(\d+)$", line) for line in lines
        )
        if match
    }
    assert counts == {"complete": 1, "running": 1, "pending": len(plan) - 3, "failed": 1}
    assert any(ids[1] in line and "CUDA out of memory" in line for line in lines)
    assert any(ids[2] in line and "epoch 1" in line for line in lines)
    assert "analyses: not run yet" in text


def test_status_of_a_folder_without_study_is_bad_input(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not a study folder" in capsys.readouterr().err


def test_atomic_files_survive_concurrent_rewrites(tmp_path, plan):
    store = StudyStore(tmp_path)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        write_runs_table(plan, store)
        pd.read_csv(store.results_dir / "runs.csv")
    assert not list(Path(store.results_dir).glob(".*.tmp"))
    assert json.loads(json.dumps(store.failure("none") or {})) == {}
