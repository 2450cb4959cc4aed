"""Linear interpolation (and its BatchNorm re-estimation) on a ViT, a ConvNeXt and someone
else's CIFAR ResNet: the ends are the two networks, a network with itself is flat."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tiny_models import build, images
from transferlens.analysis import barrier, interpolation_curve
from transferlens.analysis.evalcache import evaluate_batches, prepare_batches

CLASSES = 3


def loader(count: int = 8, seed: int = 3) -> DataLoader:
    x = images(count, seed=seed)
    return DataLoader(TensorDataset(x, torch.arange(count) % CLASSES), batch_size=4)


@pytest.mark.parametrize(
    ("name", "mode"),
    [("timm_vit", "interpolate"), ("timm_convnext", "interpolate"), ("cifar_resnet", "recompute")],
)
def test_interpolation_runs_on_every_architecture(name, mode):
    a, b = build(name, CLASSES, seed=0).eval(), build(name, CLASSES, seed=1).eval()
    curve = interpolation_curve(
        a, b, loader(), "multiclass", lams=[0.0, 0.5, 1.0], train_loader=loader(seed=4)
    )
    assert curve.bn_mode == mode  # LayerNorm models interpolate; BatchNorm is re-estimated
    flat = interpolation_curve(
        a, a, loader(), "multiclass", lams=[0.0, 0.5, 1.0], train_loader=loader(seed=4)
    )
    assert len(set(flat.loss)) == 1 and barrier(flat) == (0.0, 0.0)
    if mode == "interpolate":  # the ends are the two networks themselves
        batches = prepare_batches(loader(), torch.device("cpu"))
        assert curve.loss[0] == evaluate_batches(a, batches, "multiclass").loss
        assert curve.loss[-1] == evaluate_batches(b, batches, "multiclass").loss
