"""The rewinding paths' intervals over the evaluation set: from the evaluations' own
per-example terms, equal to a brute-force bootstrap, the point values unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import path_grid
from transferlens.analysis.evalcache import evaluate_batches, prepare_batches
from transferlens.analysis.perturb import noise_seed
from transferlens.analysis.stats import bootstrap_interval
from transferlens.metrics import mean_roc_auc

N = 48
SIGMAS = (0.0, 0.3)


class Net(nn.Module):
    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.conv1 = nn.Linear(4, 6)
        self.fc = nn.Linear(6, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv1(x)))


def data(task: str) -> TensorDataset:
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(N, 4, generator=generator)
    if task == "multiclass":
        return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.3).long())
    return TensorDataset(x, torch.stack([x[:, 0] > 0, x[:, 2] > 0.2], dim=1).float())


def models(task: str) -> tuple[Net, Net]:
    torch.manual_seed(0)
    model = Net(3 if task == "multiclass" else 2)
    init = copy.deepcopy(model)
    x, y = data(task).tensors
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(60):
        optimizer.zero_grad()
        outputs = model(x)
        if task == "multiclass":
            loss = F.cross_entropy(outputs, y)
        else:
            loss = F.binary_cross_entropy_with_logits(outputs, y)
        loss.backward()
        optimizer.step()
    return model.eval(), init.eval()


def network_at(final, init, weight, sigma, index, sample, seed):
    """The network path_grid evaluates at the direct path's end points (weight 0 or 1)."""
    working = copy.deepcopy(final)
    source = init if weight == 0 else final
    generator = torch.Generator().manual_seed(noise_seed(seed, "conv1", index, sample))
    with torch.no_grad():
        for name in ("weight", "bias"):
            target = getattr(working.conv1, name)
            target.copy_(getattr(source.conv1, name))
            if sigma:
                noise = torch.randn(target.shape, generator=generator, dtype=target.dtype)
                target.add_(noise * sigma)
    return working


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_path_intervals_equal_a_brute_force_bootstrap(task):
    final, init = models(task)
    loader = DataLoader(data(task), batch_size=16)
    options = {"module": "conv1", "n_points": 2, "sigmas": SIGMAS, "n_noise": 2, "seed": 5}
    plain = path_grid(final, init, loader, task, **options).to_frame()
    frame = path_grid(final, init, loader, task, n_bootstrap=300, **options).to_frame()
    values = ["path", "distance", "distance_from_init", "sigma", "loss", "metric"]
    assert frame[values].equals(plain[values])  # the values themselves are unchanged
    assert plain[["loss_low", "metric_low"]].isna().all().all()
    x, y = data(task).tensors
    for row_index, row in frame.iterrows():
        point, sigma_index = divmod(row_index, len(SIGMAS))
        draws = 1 if row["sigma"] == 0 else 2
        nets = [
            network_at(final, init, point, row["sigma"], row_index, sample, 5)
            for sample in range(draws)
        ]
        with torch.no_grad():
            logits = [net(x) for net in nets]
        if task == "multiclass":
            losses = [F.cross_entropy(z, y, reduction="none").double().numpy() for z in logits]
            correct = [(z.argmax(1) == y).double().numpy() for z in logits]
            metric = bootstrap_interval(sum(correct) / draws, 300, seed=5)
        else:
            losses = [
                F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(1).double().numpy()
                for z in logits
            ]

            def statistic(idx, logits=logits):
                rows = torch.as_tensor(idx)
                return sum(mean_roc_auc(z[rows], y[rows]) for z in logits) / len(logits)

            metric = bootstrap_interval(statistic, 300, seed=5, n=N)
        loss = bootstrap_interval(sum(losses) / draws, 300, seed=5)
        assert (row["loss_low"], row["loss_high"]) == pytest.approx(loss, rel=1e-6)
        assert (row["metric_low"], row["metric_high"]) == pytest.approx(metric, rel=1e-9)
        assert row["loss_low"] <= row["loss"] <= row["loss_high"]
        assert row["metric_low"] <= row["metric"] <= row["metric_high"]


def test_path_point_values_are_evaluate_batches_numbers():
    final, init = models("multiclass")
    loader = DataLoader(data("multiclass"), batch_size=16)
    frame = path_grid(final, init, loader, "multiclass", module="conv1", n_points=2,
                      sigmas=(0.0,), n_bootstrap=50).to_frame()  # fmt: skip
    end = evaluate_batches(final, prepare_batches(loader), "multiclass")
    assert (frame["loss"].iloc[-1], frame["metric"].iloc[-1]) == (end.loss, end.metric)
    assert np.isfinite(frame[["loss_low", "loss_high"]].to_numpy()).all()
