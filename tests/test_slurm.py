"""The SLURM executor on the one-node cluster of ../shared/slurm (root only; else skipped).

A small study runs as job arrays to the results of the local executor (bit-identical
checkpoints, one thread each); a cancelled job's run is reported failed with SLURM's
reason, and ``--retry-failed`` completes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_STUDY, merged
from transferlens.cli import main
from transferlens.io import atomic_save_safetensors
from transferlens.models import build_model
from transferlens.study.execute import execute_run
from transferlens.study.runner import execute_plan, open_study

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # a cluster start and jobs: minutes
SLURM_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "slurm"
# Fewer classes than the synthetic data's default, three RI-T epochs, one CPU a job.
STUDY = merged(
    TINY_STUDY,
    data_defaults={"options": {"source_classes": 4, "target_classes": 3}},
    training={"rit": {"epochs": 3}},
    slurm={"cpus_per_task": 1, "time_minutes": 10},
)


@pytest.fixture(scope="session")
def cluster():
    start, stop = SLURM_DIR / "start-cluster.sh", SLURM_DIR / "stop-cluster.sh"
    if not start.exists() or os.geteuid() != 0:
        pytest.skip("needs ../shared/slurm and root")
    # A cluster someone else brought up stays up; the one we start is stopped at the end.
    already_up = (
        bool(shutil.which("sinfo"))
        and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    )
    result = subprocess.run(["bash", str(start)], capture_output=True, text=True, timeout=900)
    if "cluster up" not in result.stdout:
        pytest.fail(f"SLURM cluster did not start: {result.stderr[-2000:]}")
    yield
    if not already_up:
        subprocess.run(["bash", str(stop)], capture_output=True, timeout=300)


def test_job_arrays_give_the_local_results(cluster, tmp_path, study_file):
    study = study_file(STUDY)
    plan, store = open_study(study, out=tmp_path / "slurm")
    report = execute_plan(plan, store, executor="slurm", progress=False)
    assert report.ok and report.complete == len(plan) == 3, report.failed
    _, local = open_study(study, out=tmp_path / "local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the jobs (cpus_per_task 1): float sums depend on threads
    try:
        for run in plan:  # plan order: the source first
            assert execute_run(local, run).status == "complete"
    finally:
        torch.set_num_threads(threads)
    for run in plan:
        folder = store.run_dir(run.run_id)
        names = sorted(p.name for p in (folder / "checkpoints").glob("*.safetensors"))
        assert len(names) == run.epochs + 1
        for name in names:
            got = load_file(str(folder / "checkpoints" / name))
            want = load_file(str(local.run_dir(run.run_id) / "checkpoints" / name))
            assert all(torch.equal(got[key], want[key]) for key in want), (run.run_id, name)
    jobs = list((store.root / "slurm").glob("*/*_submitted.pkl"))
    assert len(jobs) == 3  # one job per run


@pytest.mark.parametrize("when", ["pending", "running"])
def test_cancelled_job_is_a_failure_until_retried(cluster, tmp_path, capsys, study_file, when):
    weights = tmp_path / "p.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        atomic_save_safetensors(
            build_model("fixup_resnet10", 4, stem="cifar", width=4).state_dict(), weights
        )
    training = {
        **STUDY["training"],
        "rit": {"epochs": 150, "lr": 0.05, "batch_size": 16, "checkpoint_every": 50},
    }
    study = study_file(STUDY, source={"weights": str(weights)}, training=training)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "transferlens.cli", "run", str(study), "--out", str(out)]
    runner = subprocess.Popen(
        command + ["--executor", "slurm", "--no-progress"], stdout=subprocess.PIPE, text=True
    )
    plan, store = open_study(study, out=out)
    rit = plan.select(init="RIT")[0].run_id
    jobs_file = out / "slurm" / "jobs.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = json.loads(jobs_file.read_text()) if jobs_file.is_file() else {}
        started = (out / "runs" / rit / "metrics.jsonl").is_file()
        if rit in jobs and (when == "pending" or started):
            break
        time.sleep(0.1)
    subprocess.run(["scancel", jobs[rit]], check=True)
    output, _ = runner.communicate(timeout=240)
    assert runner.returncode == 1, output
    failure = store.failure(rit)
    assert failure is not None and "CANCELLED" in failure["error"] and jobs[rit] in failure["error"]
    assert f"failed  {rit}" in output and "CANCELLED" in output
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert any(rit in line and "CANCELLED" in line for line in status.splitlines())
    assert (
        main(
            [
                "run",
                str(study),
                "--out",
                str(out),
                "--executor",
                "slurm",
                "--retry-failed",
                "--no-progress",
            ]
        )
        == 0
    )
    assert all(store.is_complete(run_id) for run_id in plan.runs)
    assert store.failure(rit) is None
