"""Kill the runner with SIGKILL at random moments, restart it, and nothing is lost.

The runner (``transferlens run`` in a subprocess, two workers) is killed at least five
times, each time at a random moment after it made progress; it is then run to the
end. Every run must be complete, every file readable (safetensors, JSON, JSON lines,
runs.csv), and every checkpoint of every run bit-identical to an uninterrupted
execution of the same study. The kill moments are drawn from a seed that is printed
and can be set (``TRANSFERLENS_TEST_SEED``) to replay a failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_STUDY, merged
from transferlens.study.execute import execute_run
from transferlens.study.executors.local import make_slots
from transferlens.study.runner import open_study

KILLS = 5
JOBS = 2
SEED_ENV = "TRANSFERLENS_TEST_SEED"
# Wider, larger and longer than the tiny study: the runner must be killable mid-way.
STUDY = merged(
    TINY_STUDY,
    model={"kwargs": {"width": 8}},
    data_defaults={
        "image_size": 16,
        "train_size": 256,
        "test_size": 64,
        "options": {"source_classes": 4, "target_classes": 3},
    },
    training={
        # Long enough that five kills (each at most 0.4 s after new progress) cannot finish
        # the study on an idle machine: with 8/5/5 epochs it once finished after three.
        "pretrain": {"epochs": 16, "batch_size": 32, "lr_milestones": [12]},
        "pt": {"epochs": 10, "batch_size": 32},
        "rit": {"epochs": 10, "batch_size": 32},
    },
    pretrain_checkpoints={"targets": ["real"], "epochs": [1, "final"]},
)


def _progress(out: Path) -> int:
    """Metrics records and completion markers written so far (grows with any progress)."""
    total = 0
    for metrics in out.glob("runs/*/metrics.jsonl"):
        total += metrics.read_bytes().count(b"\n")
    return total + len(list(out.glob("runs/*/complete.json")))


def _runner(study: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "transferlens.cli", "run", str(study), "--out", str(out)]
    command += ["--devices", "cpu", "--jobs", str(JOBS), "--no-progress"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_after_progress(study: Path, out: Path, rng: random.Random) -> bool:
    """Start a runner, wait for new progress, SIGKILL it a random moment later."""
    before = _progress(out)
    runner = _runner(study, out)
    deadline = time.monotonic() + 120
    while _progress(out) == before and runner.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.4))
    finished = runner.poll() is not None
    if not finished:
        runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    return not finished


def _baseline(study: Path, out: Path) -> None:
    """The same study, uninterrupted, in this process with the workers' thread count."""
    plan, store = open_study(study, out=out)
    threads = torch.get_num_threads()
    torch.set_num_threads(make_slots("cpu", jobs=JOBS)[0].threads)
    try:
        for run in plan:  # plan order: the source before its fine-tunes
            assert execute_run(store, run).status == "complete"
    finally:
        torch.set_num_threads(threads)


def _kill_seed() -> int:
    """The seed of the kill moments: ``$TRANSFERLENS_TEST_SEED``, else a fresh one.

    Printed either way (pytest shows it with a failure): set the variable to it to
    replay the same kills.
    """
    given = os.environ.get(SEED_ENV)
    seed = int(given) if given else random.SystemRandom().randrange(2**32)
    print(f"kill moments drawn with {SEED_ENV}={seed}")
    return seed


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path, study_file):
    study = study_file(STUDY)
    out, reference = tmp_path / "killed", tmp_path / "reference"
    seed = _kill_seed()
    rng = random.Random(seed)
    kills = 0
    for _ in range(KILLS + 3):  # a few spare starts in case a runner finishes first
        if kills == KILLS:
            break
        kills += _kill_after_progress(study, out, rng)
    assert kills == KILLS, f"only {kills} kills (seed {seed})"
    final = _runner(study, out)
    assert final.wait(timeout=300) == 0, f"seed {seed}"

    plan, store = open_study(study, out=out)
    assert all(store.is_complete(run_id) for run_id in plan.runs)
    for path in out.rglob("*.safetensors"):
        if not path.name.startswith("."):
            load_file(str(path))
    for path in out.rglob("*.json"):
        json.loads(path.read_text(encoding="utf-8"))
    for path in out.rglob("*.jsonl"):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        run = plan[path.parent.name]
        assert [r["epoch"] for r in records] == list(range(run.epochs + 1)), path
    table = pd.read_csv(out / "results" / "runs.csv")
    assert set(table.status) == {"complete"} and len(table) == len(plan)
    # A kill during an atomic write leaves its hidden temporary file, never a torn target.
    assert all(p.name.startswith(".") for p in out.rglob("*.tmp"))

    _baseline(study, reference)
    for run in plan:
        killed_dir, reference_dir = store.run_dir(run.run_id), reference / "runs" / run.run_id
        names = sorted(p.name for p in (reference_dir / "checkpoints").glob("*.safetensors"))
        assert names == sorted(p.name for p in (killed_dir / "checkpoints").glob("*.safetensors"))
        assert len(names) == run.epochs + 1
        for name in names:
            got = load_file(str(killed_dir / "checkpoints" / name))
            want = load_file(str(reference_dir / "checkpoints" / name))
            assert got.keys() == want.keys()
            for key in want:
                assert torch.equal(got[key], want[key]), (run.run_id, name, key, seed)
        load_file(str(killed_dir / "resume.safetensors"))
        metrics = [
            json.loads(line) for line in (killed_dir / "metrics.jsonl").read_text().splitlines()
        ]
        expected = [
            json.loads(line) for line in (reference_dir / "metrics.jsonl").read_text().splitlines()
        ]
        for got, want in zip(metrics, expected):
            for key in (
                "epoch",
                "test_loss",
                "test_metric",
                "train_loss",
                "train_metric",
                "step_loss",
            ):
                assert got[key] == want[key], (run.run_id, key, seed)
