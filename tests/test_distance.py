"""Parameter distance against a float64 brute force of flattened parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from transferlens.analysis import parameter_distance
from transferlens.errors import UserInputError
from transferlens.models import build_model
from transferlens.models.module_map import module_map


class Net(nn.Module):
    def __init__(self, num_classes: int = 3, seed: int = 0, batchnorm: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4) if batchnorm else nn.Identity()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv1(x)).mean(dim=(2, 3))
        return self.fc(self.body(x))


def brute_force_l2(a: nn.Module, b: nn.Module, prefix: str = "", skip: str | None = None) -> float:
    """sqrt(sum (a - b)^2) over flattened float64 parameters whose name starts with prefix."""
    pa = dict(a.named_parameters())
    pb = dict(b.named_parameters())
    names = [
        n
        for n in pa
        if n.startswith(prefix) and not (skip and (n == skip or n.startswith(skip + ".")))
    ]
    va = np.concatenate([pa[n].detach().numpy().astype(np.float64).ravel() for n in names])
    vb = np.concatenate([pb[n].detach().numpy().astype(np.float64).ravel() for n in names])
    return float(np.sqrt(np.sum((va - vb) ** 2)))


def row(frame, module):
    return float(frame.loc[frame["module"] == module, "l2"].iloc[0])


def test_whole_and_per_module_equal_brute_force():
    a, b = Net(seed=0), Net(seed=1)
    result = parameter_distance(a, b)
    frame = result.to_frame()
    assert list(frame.columns) == ["module", "l2"]
    # The units of the module map: the Sequential's parameterised children one by one.
    units = ["conv1", "body.0", "body.2", "fc"]
    assert list(frame["module"]) == ["all", *units]
    assert row(frame, "all") == pytest.approx(brute_force_l2(a, b), rel=1e-12)
    for module in units:
        assert row(frame, module) == pytest.approx(brute_force_l2(a, b, module + "."), rel=1e-12)
    # The units partition the parameters: squares add up to the whole.
    parts = sum(row(frame, m) ** 2 for m in units)
    assert math.sqrt(parts) == pytest.approx(row(frame, "all"), rel=1e-12)
    assert result.excluded == ()
    assert result.total == row(frame, "all") and result.per_module["body.0"] == row(frame, "body.0")
    assert result.settings == {"modules": None, "exclude_head": "auto", "include_buffers": False}
    # Stages of the map: stem (conv1), body (its two layers), head (fc).
    assert list(result.per_stage) == ["stem", "body", "head"]
    assert result.per_stage["body"] == pytest.approx(brute_force_l2(a, b, "body."), rel=1e-12)


def test_state_dicts_give_the_same_values_and_self_distance_is_zero():
    a, b = Net(seed=0), Net(seed=1)
    from_modules = parameter_distance(a, b).to_frame()
    # A bare state dict's default units are its top-level names; given the map, the same.
    from_states = parameter_distance(a.state_dict(), b.state_dict(), modules=module_map(a))
    assert from_states.to_frame()["l2"].tolist() == pytest.approx(
        from_modules["l2"].tolist(), rel=1e-12
    )
    bare = parameter_distance(a.state_dict(), b.state_dict()).to_frame()
    assert bare["module"].tolist() == ["all", "conv1", "body", "fc"]
    assert parameter_distance(a, a).to_frame()["l2"].tolist() == [0.0] * 5


def test_head_of_another_shape_is_excluded_and_reported():
    a, b = Net(num_classes=3, seed=0), Net(num_classes=5, seed=1)
    result = parameter_distance(a, b)
    frame = result.to_frame()
    assert result.excluded == ("fc",)
    assert math.isnan(row(frame, "fc"))
    assert row(frame, "all") == pytest.approx(brute_force_l2(a, b, skip="fc"), rel=1e-12)
    # Bare state dicts: the head is found from the differing entries.
    states = parameter_distance(a.state_dict(), b.state_dict())
    assert states.excluded == ("fc",)
    with pytest.raises(UserInputError, match=r"fc\.(weight|bias)"):
        parameter_distance(a, b, exclude_head=False)


def test_forced_head_exclusion_and_explicit_modules():
    a, b = Net(seed=0), Net(seed=1)
    result = parameter_distance(a, b, exclude_head=True, modules=["body.0", "fc"])
    frame = result.to_frame()
    assert result.excluded == ("fc",)
    assert result.settings["modules"] == ["body.0", "fc"]
    assert list(frame["module"]) == ["all", "body.0", "fc"]
    assert row(frame, "all") == pytest.approx(brute_force_l2(a, b, skip="fc"), rel=1e-12)
    assert row(frame, "body.0") == pytest.approx(brute_force_l2(a, b, "body.0."), rel=1e-12)
    with pytest.raises(UserInputError, match="nothing"):
        parameter_distance(a, b, modules=["nothing"])
    with pytest.raises(UserInputError, match="listed twice: fc"):
        parameter_distance(a, b, modules=["fc", "conv1", "fc"])


def test_buffers_only_when_asked_and_never_integer_ones():
    a, b = Net(seed=0, batchnorm=True), Net(seed=1, batchnorm=True)
    with torch.no_grad():
        b.norm.running_mean.fill_(2.0)
        b.norm.running_var.fill_(3.0)
        b.norm.num_batches_tracked.fill_(100)
    plain = parameter_distance(a, b).to_frame()
    assert row(plain, "all") == pytest.approx(brute_force_l2(a, b), rel=1e-12)
    with_buffers = parameter_distance(a, b, include_buffers=True).to_frame()
    extra = 4 * 2.0**2 + 4 * (3.0 - 1.0) ** 2  # running_mean 0 -> 2, running_var 1 -> 3
    assert row(with_buffers, "all") ** 2 == pytest.approx(row(plain, "all") ** 2 + extra, rel=1e-12)


def test_other_architecture_is_a_user_error():
    a = Net(seed=0)
    b = Net(seed=1)
    b.body[0] = nn.Linear(4, 9)
    with pytest.raises(UserInputError, match="body.0"):
        parameter_distance(a, b)


def test_resnet_modules_are_the_papers():
    a = build_model("fixup_resnet10", 4, stem="cifar", width=4)
    b = build_model("fixup_resnet10", 7, stem="cifar", width=4)
    result = parameter_distance(a, b)
    frame = result.to_frame()
    assert list(frame["module"]) == [
        "all",
        "conv1",
        "layer1.0",
        "layer2.0",
        "layer3.0",
        "layer4.0",
        "fc",
    ]
    assert result.excluded == ("fc",)
    assert row(frame, "all") == pytest.approx(brute_force_l2(a, b, skip="fc"), rel=1e-12)
