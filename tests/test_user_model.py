"""The analyses on a user's own model: a class defined here, trained with plain torch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import (
    barrier,
    cka,
    interpolation_curve,
    module_criticality,
    parameter_distance,
)


class TinyConvNet(nn.Module):
    """Not from the package: its own module names (stem, features, classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.features = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.stem(x)).mean(dim=(2, 3)))


def data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=generator)
    y = (x[:, 0, :4].mean(dim=(1, 2)) > 0).long() * 2 + (x[:, 0, :, :4].mean(dim=(1, 2)) > 0).long()
    return TensorDataset(x, y)


def trained(seed: int) -> tuple[TinyConvNet, TinyConvNet]:
    torch.manual_seed(seed)
    model = TinyConvNet()
    init = TinyConvNet()
    init.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    x, y = data().tensors
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), init.eval()


def test_every_weight_space_analysis_and_cka_run_on_a_user_model():
    (a, a_init), (b, _) = trained(0), trained(1)
    loader = DataLoader(data(), batch_size=16)

    distance = parameter_distance(a, b)
    assert list(distance.to_frame()["module"]) == ["all", "stem", "features", "classifier"]
    assert distance.total > 0 and distance.excluded == ()

    curve = interpolation_curve(a, b, loader, "multiclass", lams=[0.0, 0.5, 1.0])
    loss_barrier, metric_barrier = barrier(curve)
    assert loss_barrier >= 0 and metric_barrier >= 0
    assert barrier(interpolation_curve(a, a, loader, "multiclass", lams=[0.0, 0.5, 1.0])) == (
        0.0,
        0.0,
    )

    criticality = module_criticality(
        a,
        a_init,
        loader,
        "multiclass",
        definition="reference",
        n_noise=2,
        alphas=[0.0, 0.5, 1.0],
        sigmas=[1e-16, 0.05, 0.1],
    )
    table = criticality.to_frame()
    assert list(table["module"]) == ["stem", "features", "classifier", "network"]
    assert all(math.isfinite(v) or v == math.inf for v in table["criticality"])
    assert criticality.n_forward_passes <= criticality.n_full_grid_passes

    result = cka(a, b, loader, layers=["stem", "features"], n_bootstrap=0)
    frame = result.to_frame()
    assert frame["layer"].tolist() == ["stem", "features"]
    assert ((frame["cka"] > 0) & (frame["cka"] <= 1 + 1e-6)).all()
    same = cka(a, a, loader, layers=["stem"], n_bootstrap=0).to_frame()
    assert abs(same["cka"].iloc[0] - 1.0) < 1e-5
