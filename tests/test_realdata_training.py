"""On real images (runs when ../shared/data exists): pre-train on CIFAR-10, fine-tune on PACS photo.

Checks the files and metrics a P run and its P-T and RI-T runs produce, end to end from
the tarballs (extracted into a temporary cache, never into the source tree).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from transferlens.data import DataSpec
from transferlens.io import read_jsonl
from transferlens.models import head_prefix
from transferlens.train import RandomInit, RunInit, TrainSpec, load_model, train

pytestmark = pytest.mark.realdata

MODEL = {"model": "fixup_resnet10", "model_kwargs": {"stem": "cifar", "width": 16}}


def _spec(data: DataSpec, init, epochs: int, lr: float) -> TrainSpec:
    return TrainSpec(
        **MODEL,
        data=data,
        init=init,
        epochs=epochs,
        lr=lr,
        batch_size=64,
        train_eval_size=256,
        device="cpu",
    )


def _check_run_folder(run_dir, epochs: int) -> list[dict]:
    assert (run_dir / "spec.json").is_file()
    summary = json.loads((run_dir / "complete.json").read_text())
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [record["epoch"] for record in records] == list(range(epochs + 1))
    for record in records:
        assert 0.0 <= record["test_metric"] <= 1.0
        assert record["test_loss"] > 0
        assert 0.0 <= record["train_metric"] <= 1.0
    for epoch in range(epochs + 1):
        checkpoint = run_dir / "checkpoints" / f"epoch_{epoch:04d}.safetensors"
        assert load_file(str(checkpoint)), checkpoint
    assert summary["final_test_metric"] == pytest.approx(records[-1]["test_metric"])
    return records


def test_cifar10_pretraining_then_pacs_photo_fine_tuning(
    shared_data, shared_data_cache, tmp_path, monkeypatch
):
    monkeypatch.setenv("TRANSFERLENS_CACHE", str(shared_data_cache))
    source = DataSpec(
        name="cifar10", root=str(shared_data), train_size=3000, test_size=500, augment=True
    )
    target = DataSpec(
        name="pacs", domain="photo", root=str(shared_data), image_size=32, test_size=300
    )

    p_dir = tmp_path / "P"
    train(_spec(source, RandomInit(seed=0), epochs=2, lr=0.05), p_dir, progress=False)
    p_records = _check_run_folder(p_dir, 2)
    assert p_records[-1]["test_metric"] > 0.2  # 10 classes: chance is 0.1

    pt_dir, rit_dir = tmp_path / "PT", tmp_path / "RIT"
    train(_spec(target, RunInit(kind="run", run=str(p_dir)), 2, 0.01), pt_dir, progress=False)
    train(_spec(target, RandomInit(seed=1), 2, 0.05), rit_dir, progress=False)
    _check_run_folder(pt_dir, 2)
    _check_run_folder(rit_dir, 2)

    # Epoch 0 of P-T is P with a fresh 7-class head: every other weight is P's.
    p_final = load_model(p_dir, "final").state_dict()
    pt_start = load_model(pt_dir, 0).state_dict()
    head = head_prefix(load_model(pt_dir, 0))
    for name, value in pt_start.items():
        if name.startswith(head + "."):
            continue
        assert torch.equal(value, p_final[name]), name
    assert pt_start[f"{head}.weight"].shape[0] == 7
