"""The local executor on tiny synthetic studies: order, failures, idempotence, sharing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_STUDY, merged
from transferlens.cli import main
from transferlens.errors import UserInputError
from transferlens.study import analyses as study_analyses
from transferlens.study.executors import local
from transferlens.study.executors.local import make_slots
from transferlens.study.runner import execute_plan, open_study

HERE = Path(__file__).resolve().parent
TRAIN = "test_executor_local:counting_train"
# Fewer classes than the synthetic data's default: the tiny study trains here.
STUDY = merged(TINY_STUDY, data_defaults={"options": {"source_classes": 4, "target_classes": 3}})


def counting_train(spec, run_dir, **kwargs):
    """The real training, after logging that it started (one line per start).

    ``TL_TEST_FAIL``: ``source`` fails the source run, ``die`` SIGKILLs the worker
    training the RI-T run; ``TL_TEST_SLEEP`` seconds are slept first (overlap runners).
    """
    from transferlens.train import train

    run_dir = Path(run_dir)
    with open(run_dir.parents[1] / "trained.log", "a", encoding="utf-8") as log:
        log.write(f"{run_dir.name} {os.getpid()}\n")
    time.sleep(float(os.environ.get("TL_TEST_SLEEP", "0")))
    fail = os.environ.get("TL_TEST_FAIL", "")
    if fail == "source" and run_dir.name.startswith("source"):
        raise RuntimeError("planned failure\nof the source")
    if fail == "die" and spec.init.kind == "random" and run_dir.name.startswith("target"):
        os.kill(os.getpid(), signal.SIGKILL)
    return train(spec, run_dir, **kwargs)


def _trained(out: Path) -> list[str]:
    log = out / "trained.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def _run(study: Path, out: Path, **options):
    plan, store = open_study(study, out=out)
    options = {"devices": "cpu", "jobs": 1, "progress": False, "train_function": TRAIN, **options}
    return plan, store, execute_plan(plan, store, **options)


def test_study_runs_once_and_a_second_invocation_starts_no_worker(
    tmp_path, capsys, monkeypatch, study_file
):
    study, out = study_file(STUDY), tmp_path / "out"
    plan, store, report = _run(study, out, jobs=2)
    assert report.ok and report.complete == report.total == len(plan) == 3
    assert sorted(_trained(out)) == sorted(plan.runs)  # each run trained exactly once
    table = pd.read_csv(out / "results" / "runs.csv")
    assert set(table.status) == {"complete"} and table.final_test_metric.notna().all()
    pt = plan.select(init="PT")[0]
    assert (store.run_dir(pt.run_id) / "run.json").is_file()

    def no_worker(*args, **kwargs):
        raise AssertionError("a worker was started for a finished study")

    monkeypatch.setattr(local, "_Worker", no_worker)
    assert main(["run", str(study), "--out", str(out), "--devices", "cpu", "--no-progress"]) == 0
    assert "3/3 runs complete (0 trained now)" in capsys.readouterr().out
    assert sorted(_trained(out)) == sorted(plan.runs)


@pytest.mark.slow
def test_failed_source_skips_its_dependents_until_retried(tmp_path, monkeypatch, study_file):
    study, out = study_file(STUDY), tmp_path / "out"
    monkeypatch.setenv("TL_TEST_FAIL", "source")
    plan, store, report = _run(study, out)
    source = plan.source_run.run_id
    pt = plan.select(init="PT")[0].run_id
    rit = plan.select(init="RIT")[0].run_id
    assert report.failed == {source: "RuntimeError: planned failure of the source"}
    assert list(report.blocked) == [pt] and source in report.blocked[pt]
    assert store.is_complete(rit) and not report.ok
    assert report.analyses.startswith("not run")
    assert "Traceback" in (store.run_dir(source) / "traceback.txt").read_text()
    monkeypatch.delenv("TL_TEST_FAIL")
    _, _, again = _run(study, out)  # failures stay failures unless retried
    assert again.failed == report.failed and again.trained == []
    _, _, retried = _run(study, out, retry_failed=True)
    assert retried.ok and sorted(retried.trained) == sorted([source, pt])
    assert store.failure(source) is None
    assert _trained(out).count(source) == 2 and _trained(out).count(rit) == 1


def test_a_worker_killed_mid_run_is_recorded_as_failed(tmp_path, monkeypatch, study_file):
    study, out = study_file(STUDY), tmp_path / "out"
    monkeypatch.setenv("TL_TEST_FAIL", "die")
    plan, store, report = _run(study, out)
    rit = plan.select(init="RIT")[0].run_id
    assert list(report.failed) == [rit]
    assert "worker process died" in report.failed[rit] and "SIGKILL" in report.failed[rit]
    assert report.complete == 2 and not store.is_running(rit)


@pytest.mark.slow
def test_two_runners_together_train_each_run_exactly_once(tmp_path, study_file):
    study = study_file(STUDY, seeds=[0, 1])
    out = tmp_path / "out"
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "from transferlens.study.runner import execute_plan, open_study\n"
        f"plan, store = open_study({str(study)!r}, out={str(out)!r})\n"
        f"report = execute_plan(plan, store, devices='cpu', jobs=1, progress=False, train_function={TRAIN!r})\n"
        "sys.exit(0 if report.ok else 1)\n"
    )
    env = {**os.environ, "TL_TEST_SLEEP": "0.3"}
    runners = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(2)]
    codes = [runner.wait(timeout=240) for runner in runners]
    assert codes == [0, 0]
    plan, store = open_study(study, out=out)
    assert all(store.is_complete(run_id) for run_id in plan.runs)
    trained = _trained(out)
    assert sorted(trained) == sorted(plan.runs), trained  # each exactly once
    pids = {line.split()[1] for line in (out / "trained.log").read_text().splitlines()}
    assert len(pids) >= 2  # both runners did some of the work


def test_executors_share_one_registry_and_refuse_unknown_names(tmp_path, study_file):
    from transferlens.study.executors import EXECUTORS, ExecutorOptions, make_executor
    from transferlens.study.executors.torchrun import TorchrunExecutor

    assert list(EXECUTORS) == ["local", "torchrun", "slurm"]
    plan, store = open_study(study_file(STUDY), out=tmp_path / "out")
    options = ExecutorOptions(devices="cpu", jobs=2)
    executor = make_executor("torchrun", plan, options)
    assert isinstance(executor, TorchrunExecutor) and executor.always_torchrun
    assert [slot.label for slot in executor.slots] == ["cpu#0", "cpu#1"]
    assert not make_executor("local", plan, options).always_torchrun
    with pytest.raises(UserInputError, match=r"--executor: unknown executor 'nope' \(known: "):
        execute_plan(plan, store, executor="nope")
    assert not store.root.exists()  # refused before any work


def test_slots_from_devices_and_jobs():
    cores = os.cpu_count() or 1
    slots = make_slots("cpu", jobs=3)
    assert [slot.label for slot in slots] == ["cpu#0", "cpu#1", "cpu#2"]
    assert all(slot.visible_devices == "" and slot.threads == max(1, cores // 3) for slot in slots)
    assert make_slots("cpu", jobs=2, nproc_per_node=2)[0].nproc == 2
    with pytest.raises(UserInputError, match="--devices"):
        make_slots("zero,one")
    with pytest.raises(UserInputError, match="--jobs"):
        make_slots("cpu", jobs=0)
    import torch

    if torch.cuda.device_count() == 0:
        with pytest.raises(UserInputError, match="GPU 0 is not available"):
            make_slots("0")
        with pytest.raises(UserInputError, match="'cuda' requested but CUDA is not available"):
            make_slots("cuda")
        assert make_slots("auto")[0].label == "cpu#0"  # auto falls back; cuda never does


def test_live_view_shows_workers_runs_and_epochs(tmp_path, study_file):
    import io

    from rich.console import Console

    from transferlens.study.progress import ProgressView

    plan, _ = open_study(study_file(STUDY), out=tmp_path / "out")
    rit = plan.select(init="RIT")[0]
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160)
    with ProgressView(plan, ["cpu#0", "cpu#1"], live=True, console=console) as view:
        view.counts(1, 0, 2)
        view.started(1, rit.run_id)
        view.epoch(1, rit.run_id, 1, 0.5)
        view.finished(1, rit.run_id, "failed", "RuntimeError: boom", 1.0)
    text = buffer.getvalue()
    assert rit.run_id in text and "RIT real seed 0" in text and "1/1" in text
    assert "FAILED" in text and "RuntimeError: boom" in text and "runs complete" in text
    assert "eta" in text  # the time left (estimated once an epoch is measured)


def test_analyses_hook_runs_once_everything_is_complete(tmp_path, monkeypatch, study_file):
    from transferlens.study.locks import RunLock
    from transferlens.study.runner import run_analyses_hook

    calls = []
    monkeypatch.setattr(
        study_analyses, "run_analyses", lambda plan, store, **shown: calls.append((plan, store))
    )
    study, out = study_file(STUDY, analyses={"distance": {}}), tmp_path / "out"
    plan, store, report = _run(study, out)
    assert report.ok and report.analyses.startswith("complete")
    assert len(calls) == 1 and calls[0][0] is plan and calls[0][1].root == store.root
    assert store.analyses_state()["state"] == "complete"

    def broken(plan, store, **shown):
        raise ValueError("no such layer\nconv9")

    monkeypatch.setattr(study_analyses, "run_analyses", broken)
    assert run_analyses_hook(plan, store) == "failed: ValueError: no such layer conv9"
    assert store.analyses_state()["state"] == "failed"
    held = RunLock(store.locks_dir / "analyses.lock")
    assert held.try_acquire()
    try:  # another process running the analyses of this study: this one leaves them
        assert run_analyses_hook(plan, store).startswith("skipped: another process")
    finally:
        held.release()
