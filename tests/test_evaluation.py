"""evaluate / predict against direct computations; ROC-AUC against scikit-learn; DDP = 1 process."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.evaluation import (
    EvalResult,
    ShardSampler,
    evaluate,
    evaluation_mode,
    model_device,
    predict,
)
from transferlens.metrics import mean_roc_auc

# scikit-learn is imported inside the tests that use it: the two spawned processes of
# the DDP test import this module, and should not pay for it.

N, FEATURES, CLASSES = 101, 6, 4  # 101: batches and shards of unequal sizes


def make_data(task: str, seed: int = 0) -> tuple[nn.Module, TensorDataset]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(N, FEATURES, generator=generator)
    if task == "multiclass":
        targets = torch.randint(0, CLASSES, (N,), generator=generator)
    else:
        targets = (torch.rand(N, CLASSES, generator=generator) < 0.4).float()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, CLASSES))
    return model, TensorDataset(inputs, targets)


@torch.no_grad()
def full_logits(model: nn.Module, data: TensorDataset) -> torch.Tensor:
    model.eval()
    return model(data.tensors[0])


def test_multiclass_evaluate_is_the_mean_over_examples() -> None:
    model, data = make_data("multiclass")
    model.train()
    result = evaluate(model, DataLoader(data, batch_size=7), "multiclass")
    # Evaluation mode inside (dropout off), the caller's mode restored after.
    assert model.training
    logits, targets = full_logits(model, data), data.tensors[1]
    assert result.n == N
    assert result.loss == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert result.metric == (logits.argmax(1) == targets).sum().item() / N


def test_multilabel_evaluate_gives_bce_and_mean_auc() -> None:
    model, data = make_data("multilabel", seed=1)
    result = evaluate(model, DataLoader(data, batch_size=10), "multilabel")
    logits, targets = full_logits(model, data), data.tensors[1]
    assert result.loss == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, targets).item(), rel=1e-6
    )
    from sklearn.metrics import roc_auc_score

    expected = roc_auc_score(targets.numpy(), torch.sigmoid(logits).numpy(), average="macro")
    assert result.metric == pytest.approx(expected, abs=1e-12)


def test_predict_returns_logits_and_targets_in_loader_order() -> None:
    model, data = make_data("multiclass", seed=2)
    logits, targets = predict(model, DataLoader(data, batch_size=16))
    assert logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert torch.allclose(logits, full_logits(model, data), atol=1e-6)
    assert torch.equal(targets, data.tensors[1])


def test_evaluation_restores_the_mode_of_every_module() -> None:
    model, data = make_data("multiclass")
    model.train()
    model[2].eval()  # dropout frozen inside a training model
    evaluate(model, DataLoader(data, batch_size=16), "multiclass")
    predict(model, DataLoader(data, batch_size=16))
    assert [module.training for module in model] == [True, True, False, True]
    with evaluation_mode([model]):
        assert not any(module.training for module in model.modules())
    assert model.training and not model[2].training


def test_model_device_is_that_of_the_first_parameter_or_buffer() -> None:
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.BatchNorm1d(2, affine=False)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # nothing to ask: the CPU


def test_empty_loader_gives_nan() -> None:
    model, data = make_data("multiclass")
    empty = TensorDataset(data.tensors[0][:0], data.tensors[1][:0])
    result = evaluate(model, DataLoader(empty, batch_size=4), "multiclass")
    assert result.n == 0 and math.isnan(result.loss) and math.isnan(result.metric)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tied", [False, True])
def test_mean_roc_auc_equals_scikit_learn(seed: int, tied: bool) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    labels = (rng.random((200, 5)) < rng.uniform(0.1, 0.6, 5)).astype(np.float32)
    scores = rng.normal(size=(200, 5)) + labels * rng.uniform(0, 2, 5)
    if tied:  # many exact ties, across positives and negatives
        scores = np.round(scores * 2) / 2
    expected = roc_auc_score(labels, scores, average="macro")
    got = mean_roc_auc(torch.from_numpy(scores), torch.from_numpy(labels))
    assert got == pytest.approx(expected, abs=1e-12)


def test_mean_roc_auc_skips_labels_with_one_class() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels = (rng.random((50, 3)) < 0.5).astype(np.float32)
    labels[:, 1] = 0.0  # undefined AUC: left out of the mean
    scores = rng.normal(size=(50, 3))
    expected = np.mean([roc_auc_score(labels[:, k], scores[:, k]) for k in (0, 2)])
    got = mean_roc_auc(torch.from_numpy(scores), torch.from_numpy(labels))
    assert got == pytest.approx(expected, abs=1e-12)


def test_shard_sampler_splits_without_padding() -> None:
    shards = [list(ShardSampler(range(10), rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))
    assert [len(ShardSampler(range(10), rank, 3)) for rank in range(3)] == [4, 3, 3]


# --- two processes (gloo, CPU) report what one process reports ---------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _evaluate_in_group(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = {}
        for task in ("multiclass", "multilabel"):
            model, data = make_data(task, seed=5)
            loader = DataLoader(data, batch_size=9, sampler=ShardSampler(data, rank, world_size))
            results[task] = evaluate(model, loader, task).__dict__
        if rank == 0:
            Path(out).write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_two_process_evaluation_equals_one_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.json"
    mp.spawn(_evaluate_in_group, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    distributed = json.loads(out.read_text())
    for task in ("multiclass", "multilabel"):
        model, data = make_data(task, seed=5)
        single = evaluate(model, DataLoader(data, batch_size=9), task)
        got = EvalResult(**distributed[task])
        assert got.n == single.n == N
        # Counts and n are exact; the loss agrees to float32 rounding (a shard's batches
        # hold other rows, and a matmul's rounding depends on its shape). Padding or
        # double counting would be off by percents.
        assert got.loss == pytest.approx(single.loss, rel=1e-6)
        assert got.metric == pytest.approx(single.metric, abs=1e-12)
