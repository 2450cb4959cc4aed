"""Progress (issue #18, item 4): time left from measured epochs, steps inside long
analyses, the header line in every mode, and ``run`` writing the report.

Clocks are fakes: no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import inspect
import io
import re

import pandas as pd
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import TINY_CRITICALITY, TINY_STUDY, merged
from transferlens.cli import main
from transferlens.study.analyses.registry import ANALYSES
from transferlens.study.eta import StudyEta
from transferlens.study.progress import AnalysisProgress, ProgressView, prefixed
from transferlens.study.runner import describe_workers, open_study, study_header
from transferlens.train.progress import epoch_line, format_duration

STUDY = merged(TINY_STUDY, data_defaults={"options": {"source_classes": 4, "target_classes": 3}})
# Criticality on the tiny study: the smallest grid, a few examples.
CRITICALITY = {"criticality": TINY_CRITICALITY}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_format_duration_reads_as_people_read_it():
    assert format_duration(42) == "42 s"
    assert format_duration(210) == "3.5 min"
    assert format_duration(2 * 3600) == "2.0 h"


def test_epoch_line_estimates_the_rest_from_this_epoch():
    record = {"epoch": 2, "test_metric": 0.5, "test_loss": 1.0, "train_metric": 0.6,
              "lr": 0.1, "images_per_second": 100.0, "seconds": 8.0, "eval_seconds": 2.0}  # fmt: skip
    assert epoch_line(record, 5).endswith("eta 30 s")  # (8 + 2) s x 3 epochs left
    assert "eta" not in epoch_line({**record, "epoch": 5}, 5)
    zero = {"epoch": 0, "test_metric": 0.1, "test_loss": 2.0, "train_metric": 0.1}
    assert "eta" not in epoch_line(zero, 5)


def test_eta_from_measured_epochs_per_kind_and_target(tmp_path, study_file):
    plan, _ = open_study(study_file(merged(STUDY, seeds=[0, 1])), out=tmp_path / "out")
    source = plan.source_run.run_id
    rit = plan.select(init="RIT", seed=0)[0].run_id
    pt = plan.select(init="PT", seed=0)[0].run_id
    assert len(plan) == 5 and plan[source].epochs == 2 and plan[rit].epochs == 1
    clock = FakeClock()
    eta = StudyEta(plan, workers=2, clock=clock)
    eta.started(source)
    clock.now = 1.0
    eta.epoch(source, 0)
    assert eta.run_seconds_left(source) is None  # nothing measured yet
    clock.now = 7.0
    eta.epoch(source, 1)  # one epoch of the source: 6 s
    assert eta.run_seconds_left(source) == 6.0  # 1 epoch left
    assert eta.run_seconds_left(rit) is None  # a source epoch does not stand for a target's
    assert eta.study_seconds_left(5) is None
    eta.started(rit)
    clock.now = 8.0
    eta.epoch(rit, 0)
    clock.now = 10.0
    eta.epoch(rit, 1)  # a target epoch: 2 s
    assert eta.run_seconds_left(pt) == 2.0 and eta.run_seconds_left(rit) == 0.0
    # Source 6 s + three waiting 2 s runs = 12 s over 2 workers; the source alone takes 6 s.
    assert eta.study_seconds_left(5) == 6.0
    eta.finished(rit)
    clock.now = 13.0
    eta.epoch(source, 2)  # the source's epochs: mean 4.5 s, none left
    assert eta.run_seconds_left(source) == 0.0
    assert eta.study_seconds_left(4) == 3.0  # three waiting 2 s runs over 2 workers
    eta.finished(source)
    assert eta.study_seconds_left(3) == 3.0
    assert eta.study_seconds_left(1) == 2.0  # one run is not shared between two workers
    assert eta.study_seconds_left(0) == 0.0


def test_plain_lines_and_live_table_show_the_time_left(tmp_path, study_file, capsys):
    plan, _ = open_study(study_file(STUDY), out=tmp_path / "out")
    source = plan.source_run.run_id
    clock = FakeClock()
    with ProgressView(plan, ["cpu#0"], live=False, clock=clock) as view:
        view.counts(0, 0, 3)
        view.started(0, source)
        view.epoch(0, source, 0, 0.25)
        clock.now = 30.0
        view.epoch(0, source, 1, 0.5)
        view.counts(2, 0, 1)  # as if the target runs were complete: the source is all
        clock.now = 50.0
        view.epoch(0, source, 2, 0.75)
    lines = capsys.readouterr().err.splitlines()
    assert "run eta" not in lines[-3]  # epoch 0: nothing measured
    # No target epoch measured: the study's time left is unknown while targets wait.
    assert lines[-2].endswith("test metric 0.500, run eta 30 s, study eta -")
    assert lines[-1].endswith("test metric 0.750, run eta 0 s, study eta 0 s")

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200)
    clock = FakeClock()
    with ProgressView(plan, ["cpu#0"], live=True, console=console, clock=clock) as view:
        view.counts(2, 0, 1)
        view.started(0, source)
        view.epoch(0, source, 0, 0.25)
        clock.now = 30.0
        view.epoch(0, source, 1, 0.5)
    text = buffer.getvalue()
    assert "(30 s, eta 30 s)" in text  # the header: time spent, study's time left
    assert re.search(r"1/2\s+0\.500\s+30 s", text)  # the worker's row: epoch, metric, eta


def test_analysis_progress_prints_steps_as_lines_without_a_terminal(capsys):
    with AnalysisProgress(live=False) as shown:
        shown.line("[analysis 1/1] criticality ...")
        shown.step("[analysis 1/1] criticality: real PT module 1/6 conv1")
        shown.line("[analysis 1/1] criticality done in 3 s")
    assert capsys.readouterr().err.splitlines() == [
        "[analysis 1/1] criticality ...",
        "[analysis 1/1] criticality: real PT module 1/6 conv1",
        "[analysis 1/1] criticality done in 3 s",
    ]
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200)
    with AnalysisProgress(live=True, console=console) as shown:
        shown.step("[analysis 1/1] criticality: real PT module 1/6 conv1")
        shown.line("[analysis 1/1] criticality done in 3 s")  # brackets are not markup
    assert "[analysis 1/1] criticality done in 3 s" in buffer.getvalue()
    said = []
    prefixed(said.append, "[analysis 7/7] criticality: ")("real PT module 3/6 conv1")
    assert said == ["[analysis 7/7] criticality: real PT module 3/6 conv1"]
    assert prefixed(None, "x") is None


def test_every_adapter_takes_a_progress_callback():
    for name, analysis in ANALYSES.items():
        parameter = inspect.signature(analysis.adapter).parameters.get("progress")
        assert parameter is not None and parameter.default is None, name


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Linear(4, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv1(x)))


def test_criticality_progress_names_each_module_and_changes_no_number():
    from transferlens.analysis import criticality_grid, module_criticality, path_grid

    torch.manual_seed(0)
    init, final = Net(), Net()
    x = torch.randn(24, 4)
    loader = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)
    alphas, sigmas = criticality_grid(3, 3)
    options = {"modules": ["conv1", "fc"], "alphas": alphas, "sigmas": sigmas, "n_noise": 2}
    said: list[str] = []
    quiet = module_criticality(final, init, loader, "multiclass", **options)
    heard = module_criticality(final, init, loader, "multiclass", **options, progress=said.append)
    assert said == ["module 1/2 conv1", "module 2/2 fc"]
    pd.testing.assert_frame_equal(quiet.to_frame(), heard.to_frame())
    said.clear()
    checkpoints = [init.state_dict(), final.state_dict()]
    options = {"n_points": 3, "sigmas": [0.0, 0.1]}
    quiet_path = path_grid(final, checkpoints, loader, "multiclass", **options)
    heard_path = path_grid(
        final, checkpoints, loader, "multiclass", **options, progress=said.append
    )
    assert said == [
        "conv1 path 1/2 direct (3 points x 2 sigmas)",
        "conv1 path 2/2 checkpoints (3 points x 2 sigmas)",
    ]
    pd.testing.assert_frame_equal(quiet_path.to_frame(), heard_path.to_frame())


def test_header_names_the_study_its_runs_and_workers(tmp_path, study_file):
    from transferlens.study.executors import ExecutorOptions, make_executor

    plan, store = open_study(study_file(STUDY, analyses={"distance": {}}), out=tmp_path / "o")
    local = make_executor("local", plan, ExecutorOptions(devices="cpu", jobs=6))
    workers = describe_workers(local, "local")
    assert workers == "6 at once (cpu#0, cpu#1, cpu#2, cpu#3, 2 more)"
    assert describe_workers(object(), "slurm") == "on the slurm executor"
    assert study_header(plan, store, 1, "1 at once (cpu#0)") == (
        f"study tiny in {store.root}: 3 runs (1 already complete), 1 at once (cpu#0), "
        "then 1 analysis"
    )


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_prints_header_and_steps_writes_the_report_and_says_when_it_fails(
    tmp_path, study_file, capsys, monkeypatch
):
    study, out = study_file(STUDY, analyses=CRITICALITY), tmp_path / "out"
    flags = ("--out", str(out), "--devices", "cpu", "--jobs", "1", "--no-progress")
    code, stdout, stderr = _run_cli(capsys, str(study), *flags)
    assert code == 0, stderr
    first = stderr.splitlines()[0]
    assert first == (
        f"study tiny in {out}: 3 runs (0 already complete), 1 at once (cpu#0), then 1 analysis"
    )
    assert "study eta" in stderr  # plain epoch lines carry the estimate
    assert "[analysis 1/1] criticality: real PT module 1/" in stderr
    assert "[analysis 1/1] criticality: real RIT conv1 path 1/" in stderr
    index = out / "report" / "index.html"
    assert index.is_file() and f"report: {index}" in stdout

    # A failed report: exit 1, the runs and tables stay, the line says how to rebuild it.
    index.unlink()
    tables = sorted(path.name for path in (out / "results").iterdir())

    def broken(study_dir, *args, **kwargs):
        raise ValueError("figure\nexploded")

    monkeypatch.setattr("transferlens.report.build_report", broken)
    code, stdout, stderr = _run_cli(capsys, str(study), *flags)
    assert code == 1
    assert "3/3 runs complete (0 trained now)" in stdout
    assert "analyses: complete" in stdout
    assert "report: FAILED: ValueError: figure exploded (the runs and analyses are complete" in (
        stdout
    )
    assert f"`transferlens report {out}` writes it again" in stdout
    assert "transferlens: the report failed" in stderr
    assert sorted(path.name for path in (out / "results").iterdir()) == tables
    assert stderr.splitlines()[0].startswith("study tiny in ") and "(3 already complete)" in stderr

    code, stdout, _ = _run_cli(capsys, str(study), *flags, "--no-report")
    assert code == 0 and "report: not written (--no-report)" in stdout
    assert not index.exists()
