"""Rewinding each unit with a bootstrap interval over the test examples (rewinding.csv)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import module_criticality, rewind_module
from transferlens.analysis.rewinding import COLUMNS, rewinding
from transferlens.analysis.stats import bootstrap_interval
from transferlens.metrics import mean_roc_auc

N = 80


class Net(nn.Module):
    def __init__(self, outputs: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Linear(5, 8)
        self.fc = nn.Linear(8, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv1(x)))


def models(outputs: int = 3) -> tuple[Net, Net]:
    torch.manual_seed(0)
    init = Net(outputs).eval()
    final = copy.deepcopy(init)
    with torch.no_grad():
        for parameter in final.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    return final, init


def data(multilabel: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(N, 5, generator=generator)
    classes = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    y = (x[:, :3] > 0).float() if multilabel else classes
    return DataLoader(TensorDataset(x, y), batch_size=32)


def test_the_interval_is_the_bootstrap_of_the_correctness_vector():
    final, init = models()
    frame = rewinding(final, init, data(), "multiclass", modules=["conv1", "fc"], n_bootstrap=200)
    assert tuple(frame.columns) == COLUMNS and list(frame["module"]) == ["conv1", "fc"]
    x, y = data().dataset.tensors
    for _, row in frame.iterrows():
        with torch.no_grad():
            correct = (rewind_module(final, init, row["module"])(x).argmax(1) == y).double()
        assert row["rewind_metric"] == float(correct.mean())
        low, high = bootstrap_interval(correct.numpy(), 200, 0.95, 0)
        assert (row["rewind_metric_low"], row["rewind_metric_high"]) == (low, high)
        assert low <= row["rewind_metric"] <= high
    # The same value module_criticality reports (its rewind_metric, no noise).
    result = module_criticality(
        final, init, data(), "multiclass", modules=["conv1", "fc"], definition="reference",
        alphas=[0.0, 1.0], sigmas=[0.1, 1.0], n_noise=1,
    )  # fmt: skip
    assert [m.rewind_metric for m in result.modules] == list(frame["rewind_metric"])


def test_multilabel_intervals_resample_the_roc_auc_and_zero_resamples_give_nan():
    final, init = models(outputs=3)
    frame = rewinding(final, init, data(True), "multilabel", modules=["fc"], n_bootstrap=50)
    x, y = data(True).dataset.tensors
    with torch.no_grad():
        scores = rewind_module(final, init, "fc")(x)
    assert frame["rewind_metric"].iloc[0] == pytest.approx(mean_roc_auc(scores, y), abs=1e-12)
    low, high = frame[["rewind_metric_low", "rewind_metric_high"]].iloc[0]
    assert 0.0 <= low <= high <= 1.0 and np.isfinite([low, high]).all()
    none = rewinding(final, init, data(), "multiclass", modules=["fc"], n_bootstrap=0)
    assert math.isnan(none["rewind_metric_low"].iloc[0])
    assert math.isnan(none["rewind_metric_high"].iloc[0])
