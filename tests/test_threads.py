"""Thread pinning: a run's CPU thread count is a study setting, recorded in the run
folder, refused on a resume under another count, and ``status`` flags mixed studies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import TINY_STUDY, merged
from transferlens.cli import main
from transferlens.commands.demo import demo_study_file
from transferlens.errors import UserInputError
from transferlens.study.execute import execute_run
from transferlens.study.executors.local import make_slots
from transferlens.study.loading import load_study, parse_study
from transferlens.study.plan import plan_study
from transferlens.study.status import study_status
from transferlens.study.store import StudyStore
from transferlens.train import TrainSpec, train
from transferlens.train.environment import ENVIRONMENT_FILE, pinned_threads
from transferlens.train.run_dir import RUN_FILE, run_environments

DATA = {"name": "synthetic", "domain": "real", "image_size": 8, "train_size": 32, "test_size": 16}


class Crash(RuntimeError):
    pass


def tiny_spec(epochs: int = 2) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "model": "fixup_resnet10",
            "model_kwargs": {"stem": "cifar", "width": 4},
            "data": DATA,
            "epochs": epochs,
            "batch_size": 16,
            "lr": 0.05,
            "device": "cpu",
        }
    )


def crash_after(epoch: int):
    def on_epoch(done: int, record: dict) -> None:
        if done == epoch:
            raise Crash(f"crash after epoch {epoch}")

    return on_epoch


def segments(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / ENVIRONMENT_FILE).read_text())["segments"]


def test_a_run_records_threads_device_and_torch_version(tmp_path):
    with pinned_threads(1):
        train(tiny_spec(), tmp_path / "run", progress=False)
    [segment] = segments(tmp_path / "run")
    assert segment["from_epoch"] == 0 and segment["threads"] == 1
    assert segment["device"] == f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    assert segment["torch"] == torch.__version__ and segment["world_size"] == 1
    assert "threads" not in json.loads((tmp_path / "run" / "spec.json").read_text())


def test_a_resume_under_another_thread_count_is_refused_before_anything_changes(tmp_path):
    run_dir = tmp_path / "run"
    with pinned_threads(1), pytest.raises(Crash):
        train(tiny_spec(3), run_dir, progress=False, on_epoch=crash_after(1))
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    with pinned_threads(2), pytest.raises(UserInputError) as refused:
        train(tiny_spec(3), run_dir, progress=False)
    message = str(refused.value)
    assert "\n" not in message and ENVIRONMENT_FILE in message
    assert "trained with 1 CPU thread(s) and would resume with 2" in message
    assert "threads_per_run: 1" in message
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
    with pinned_threads(1):
        summary = train(tiny_spec(3), run_dir, progress=False)
    assert summary.resumed_from == 1
    assert len(segments(run_dir)) == 1  # resumed in the same environment: one segment


def test_a_resume_elsewhere_is_recorded_as_a_second_environment(tmp_path):
    run_dir = tmp_path / "run"
    with pinned_threads(1), pytest.raises(Crash):
        train(tiny_spec(3), run_dir, progress=False, on_epoch=crash_after(1))
    recorded = json.loads((run_dir / ENVIRONMENT_FILE).read_text())
    recorded["segments"][0]["torch"] = "1.0.0"  # as if trained under another torch
    (run_dir / ENVIRONMENT_FILE).write_text(json.dumps(recorded))
    with pinned_threads(1):
        train(tiny_spec(3), run_dir, progress=False)
    assert [s["from_epoch"] for s in segments(run_dir)] == [0, 1]
    assert [env.torch for env in run_environments(run_dir)] == ["1.0.0", torch.__version__]


def test_a_study_pins_the_thread_count_of_each_run_and_records_it(tmp_path):
    study = parse_study(merged(TINY_STUDY, threads_per_run=2), "study.yaml")
    plan = plan_study(study, "study.yaml")
    default_plan = plan_study(parse_study(TINY_STUDY, "study.yaml"), "study.yaml")
    assert list(plan.runs) == list(default_plan.runs)  # an execution setting: ids unchanged
    assert {run.threads for run in default_plan} == {1}  # the stated default
    store = StudyStore(tmp_path / "study")
    source = plan.source_run
    assert source is not None and source.threads == 2
    with pinned_threads(1):
        assert execute_run(store, source).status == "complete"
        assert torch.get_num_threads() == 1  # the caller's count is given back
    assert segments(store.run_dir(source.run_id))[0]["threads"] == 2
    assert json.loads((store.run_dir(source.run_id) / RUN_FILE).read_text())["threads"] == 2


def test_cpu_workers_use_the_pinned_threads_whatever_their_number():
    cores = os.cpu_count() or 1
    assert [slot.threads for slot in make_slots("cpu", jobs=3, threads_per_run=1)] == [1, 1, 1]
    assert {slot.threads for slot in make_slots("cpu", jobs=1, threads_per_run=2)} == {2}
    # Without --jobs: as many workers as the cores hold at the pinned count.
    assert len(make_slots("cpu", threads_per_run=1)) == cores
    assert len(make_slots("cpu", threads_per_run=cores * 2)) == 1


def test_the_demo_pins_one_thread_per_run():
    for fast in (True, False):
        study = load_study(demo_study_file(fast))
        assert study.threads_per_run == 1 and study.keep_checkpoints == "needed"


def test_a_bad_thread_count_is_one_line_exit_2(study_file, capsys):
    code = main(["plan", str(study_file(threads_per_run=0))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "threads_per_run" in err


def test_status_flags_a_study_whose_runs_mix_environments(tmp_path):
    plan = plan_study(parse_study(TINY_STUDY, "study.yaml"), "study.yaml")
    store = StudyStore(tmp_path / "study")
    store.write_study(plan)
    for run in plan:  # plan order: the source before its fine-tune
        assert execute_run(store, run).status == "complete"
    status = study_status(store)
    assert f"environment: cpu ({torch.backends.cpu.get_cpu_capability()}), 1 thread" in status
    assert "WARNING" not in status

    rit = plan.select(init="RIT")[0]
    path = store.run_dir(rit.run_id) / ENVIRONMENT_FILE
    recorded = json.loads(path.read_text())
    recorded["segments"][0]["threads"] = 2  # as `run` with 1 job x 2 threads once left it
    path.write_text(json.dumps(recorded))
    status = study_status(store)
    assert "WARNING: runs trained in different environments" in status
    assert "2 run(s): cpu" in status and "1 run(s): cpu" in status and "2 threads" in status
    assert main(["status", str(store.root)]) == 0
