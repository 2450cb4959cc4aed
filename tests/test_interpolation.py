"""Interpolation between networks: exact ends, buffers, BatchNorm statistics, barriers."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import barrier, interpolate_state_dicts, interpolation_curve, lambda_grid
from transferlens.analysis.interpolation import recompute_batchnorm
from transferlens.errors import UserInputError
from transferlens.evaluation import evaluate


def bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(4, 3),
    )


def plain_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 16), nn.Tanh(), nn.Linear(16, 3))


def data(n: int = 48, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(
        torch.randn(n, 3, 6, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)
    )


def with_moved_statistics(model: nn.Module) -> nn.Module:
    """Give the BatchNorm non-trivial running statistics (as training would)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 6, 6) * 2 + 1)
    return model.eval()


def test_ends_are_exact_and_integer_buffers_copied():
    a, b = with_moved_statistics(bn_net(0)), with_moved_statistics(bn_net(1))
    with torch.no_grad():
        b[1].num_batches_tracked.fill_(17)
    sa, sb = a.state_dict(), b.state_dict()
    at_0, at_1 = interpolate_state_dicts(a, b, 0.0), interpolate_state_dicts(a, b, 1.0)
    for key in sa:
        assert torch.equal(at_0[key], sa[key]) and at_0[key].dtype == sa[key].dtype
        assert torch.equal(at_1[key], sb[key]) and at_1[key].dtype == sb[key].dtype
    middle = interpolate_state_dicts(a, b, 0.3)
    assert int(middle["1.num_batches_tracked"]) == int(sa["1.num_batches_tracked"])
    for key, value in middle.items():
        if value.is_floating_point():  # parameters and running statistics alike
            expected = 0.7 * sa[key].double() + 0.3 * sb[key].double()
            torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-6)
    # The inputs are untouched.
    assert all(torch.equal(a.state_dict()[k], sa[k]) for k in sa)


def test_a_network_with_itself_is_constant_along_the_path():
    a = with_moved_statistics(bn_net(0))
    for lam in (0.1, 0.5, 0.77):
        mixed = interpolate_state_dicts(a, a, lam)
        assert all(torch.equal(mixed[k], v) for k, v in a.state_dict().items())


def test_layout_mismatch_and_bad_lambda_are_user_errors():
    with pytest.raises(UserInputError, match=r"3\.bias.*only in the first"):
        interpolate_state_dicts(plain_net(0), nn.Sequential(nn.Flatten(), nn.Linear(108, 16)), 0.5)
    with pytest.raises(UserInputError, match="lambda"):
        interpolate_state_dicts(plain_net(0), plain_net(1), float("nan"))


def test_lambda_grid():
    grid = lambda_grid(11)
    assert len(grid) == 11 and grid[0] == 0.0 and grid[-1] == 1.0
    assert grid[5] == pytest.approx(0.5)
    assert lambda_grid(2) == [0.0, 1.0]
    with pytest.raises(UserInputError):
        lambda_grid(1)


def test_barrier_of_hand_made_curves():
    bump = pd.DataFrame(
        {
            "lam": [0.0, 0.25, 0.5, 0.75, 1.0],
            "loss": [1.0, 2.0, 2.5, 1.5, 1.0],
            "metric": [0.8, 0.5, 0.4, 0.6, 0.6],
        }
    )
    loss_barrier, metric_barrier = barrier(bump)
    assert loss_barrier == pytest.approx(1.5)
    # metric line 0.8 - 0.2 lam: falls 0.25, 0.30, 0.05 below it -> 0.30
    assert metric_barrier == pytest.approx(0.3)
    # A convex loss (below its chord) and a concave metric (above it): no barrier at all.
    valley = pd.DataFrame(
        {"lam": [1.0, 0.0, 0.5], "loss": [0.3, 0.1, 0.05], "metric": [0.7, 0.9, 0.95]}
    )
    assert barrier(valley) == (0.0, 0.0)
    # A straight line has none either (the line is evaluated exactly through both ends).
    straight = pd.DataFrame(
        {"lam": lambda_grid(7), "loss": [0.1 + 0.2 * x for x in lambda_grid(7)], "metric": 0.5}
    )
    assert barrier(straight)[0] == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(UserInputError, match="lam = 0"):
        barrier(bump.iloc[1:])


class CountingLoader:
    """Iterates a DataLoader and counts how often it was iterated."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader, self.passes = loader, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.loader)


def test_curve_matches_separate_evaluations_and_reads_the_data_once():
    a, b = plain_net(0), plain_net(1)
    loader = CountingLoader(DataLoader(data(), batch_size=16))
    lams = [0.0, 0.4, 1.0]
    result = interpolation_curve(a, b, loader, "multiclass", lams=lams)
    assert loader.passes == 1
    curve = result.to_frame()
    assert list(curve.columns) == ["lam", "loss", "metric"] and result.bn_mode == "interpolate"
    assert result.lams == tuple(lams) and list(curve["loss"]) == list(result.loss)
    assert result.settings == {"lams": lams, "bn_mode": "auto", "bn_batches": None,
                               "repair": False}  # fmt: skip
    for lam, loss, metric in curve.itertuples(index=False):
        model = copy.deepcopy(a)
        model.load_state_dict(interpolate_state_dicts(a, b, lam))
        expected = evaluate(model, DataLoader(data(), batch_size=16), "multiclass")
        assert loss == pytest.approx(expected.loss, rel=1e-12)
        assert metric == pytest.approx(expected.metric, rel=1e-12)


def test_barrier_of_a_network_with_itself_is_zero():
    a = plain_net(3)
    result = interpolation_curve(a, a, DataLoader(data(), batch_size=16), "multiclass")
    assert len(result.to_frame()) == 11 and result.lams == tuple(lambda_grid(11))
    # barrier takes the result itself or its frame.
    assert barrier(result) == barrier(result.to_frame()) == (0.0, 0.0)


def test_batchnorm_recompute_gives_the_statistics_of_the_data():
    model = with_moved_statistics(bn_net(0))
    inputs = data(64)[:][0] * 3 + 2
    batches = [(inputs[i : i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, 64, 16)]
    momentum = model[1].momentum
    recompute_batchnorm(model, batches)
    with torch.no_grad():
        features = [model[0](x) for x, _ in batches]  # what the BatchNorm sees
    mean = torch.cat(features).mean(dim=(0, 2, 3))
    per_batch_var = torch.stack([f.transpose(0, 1).flatten(1).var(dim=1) for f in features])
    torch.testing.assert_close(model[1].running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model[1].running_var, per_batch_var.mean(0), rtol=1e-5, atol=1e-5)
    assert model[1].momentum == momentum and not model.training


def test_batchnorm_recompute_restores_the_mode_of_every_module():
    model = with_moved_statistics(bn_net(0)).train()
    model[0].eval()  # a frozen layer inside a training model stays frozen
    batches = [(data(16)[:][0], torch.zeros(16, dtype=torch.long))]
    recompute_batchnorm(model, batches)
    assert model.training and [m.training for m in model] == [False] + [True] * (len(model) - 1)


def test_curve_recomputes_batchnorm_by_default_and_needs_training_data():
    a, b = with_moved_statistics(bn_net(0)), with_moved_statistics(bn_net(1))
    test_loader = DataLoader(data(32, seed=1), batch_size=16)
    with pytest.raises(UserInputError, match="train_loader"):
        interpolation_curve(a, b, test_loader, "multiclass")
    train_loader = DataLoader(data(32, seed=2), batch_size=16)
    result = interpolation_curve(
        a, b, test_loader, "multiclass", lams=[0.0, 0.5, 1.0], train_loader=train_loader
    )
    assert result.bn_mode == "recompute"
    curve = result.to_frame()
    # At lambda 0 the curve evaluates a with statistics re-estimated on the training data.
    expected_model = copy.deepcopy(a)
    recompute_batchnorm(expected_model, list(train_loader))
    expected = evaluate(expected_model, test_loader, "multiclass")
    assert curve.loc[0, "loss"] == pytest.approx(expected.loss, rel=1e-9)
    interpolated = interpolation_curve(
        a, b, test_loader, "multiclass", lams=[0.0, 1.0], bn_mode="interpolate"
    ).to_frame()
    assert interpolated.loc[0, "loss"] == pytest.approx(
        evaluate(a, test_loader, "multiclass").loss, rel=1e-12
    )
    assert interpolated.loc[1, "loss"] == pytest.approx(
        evaluate(b, test_loader, "multiclass").loss, rel=1e-12
    )
    with pytest.raises(UserInputError, match="bn_mode"):
        interpolation_curve(a, b, test_loader, "multiclass", bn_mode="nope")
