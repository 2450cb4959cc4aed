"""Runs trained by two torchrun processes (gloo, CPU) report the metrics of one process.

Each global batch is split between the processes and their gradients are averaged,
so the two-process run follows the one-process trajectory up to float rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from transferlens.io import atomic_save_safetensors
from transferlens.models import build_model
from transferlens.study.execute import execute_run
from transferlens.study.executors.torchrun import torchrun_command
from transferlens.study.runner import execute_plan, open_study

STUDY = {
    "name": "ddp",
    "model": {"name": "fixup_resnet10", "kwargs": {"stem": "cifar", "width": 4}},
    "data_defaults": {
        "name": "synthetic",
        "image_size": 8,
        "train_size": 64,
        "test_size": 32,
        "options": {"target_classes": 3},
    },
    "targets": [{"label": "real", "data": {"domain": "real"}}],
    "training": {
        "pt": {"epochs": 2, "lr": 0.02, "batch_size": 16, "augment": False},
        "rit": {"epochs": 2, "lr": 0.05, "batch_size": 16, "augment": False},
    },
    "seeds": [0],
}


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    weights = tmp_path / "p.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("fixup_resnet10", 5, stem="cifar", width=4)
    atomic_save_safetensors(model.state_dict(), weights)
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump({**STUDY, "source": {"weights": str(weights)}}), encoding="utf-8"
    )
    return path


def test_torchrun_command_line():
    command = torchrun_command("/s", "target-abc", 4)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert command[-3:] == ["transferlens.study.executors.torchrun", "/s", "target-abc"]


@pytest.mark.slow
def test_two_processes_report_the_metrics_of_one(study, tmp_path):
    plan, one = open_study(study, out=tmp_path / "one")
    for run in plan:
        assert execute_run(one, run).status == "complete"
    _, two = open_study(study, out=tmp_path / "two")
    report = execute_plan(plan, two, devices="cpu", jobs=1, nproc_per_node=2, progress=False)
    assert report.ok, report.failed
    for run in plan:
        summary = json.loads((two.run_dir(run.run_id) / "complete.json").read_text())
        assert summary["world_size"] == 2
        assert (two.run_dir(run.run_id) / "torchrun.log").is_file()
        single, double = _records(one.run_dir(run.run_id)), _records(two.run_dir(run.run_id))
        assert [r["epoch"] for r in double] == [r["epoch"] for r in single] == [0, 1, 2]
        for a, b in zip(single, double):
            for key in ("test_loss", "train_loss"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (run.run_id, key)
            for key in ("test_metric", "train_metric"):
                assert b[key] == pytest.approx(a[key], abs=1.5 / 64), (run.run_id, key)
            if a["epoch"] > 0:
                assert b["images"] == a["images"] == 64
