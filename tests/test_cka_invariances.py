"""CKA's invariances, for every estimator the library offers, at any scale.

CKA(c X Q, Y) = CKA(X, Y) for c != 0 and an orthogonal Q (Kornblith et al. 2019): tested
for linear and RBF (median bandwidth) CKA, biased and debiased, the streaming
MinibatchCKA on features and on Grams, and cka_many / cka_matrix on tiny models, in
float64 to 1e-9 (relative) at scales 1e-3, 1e-6 and 1e6. A representation without
variance gives NaN (exactly, by its values; no epsilon)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import cka_many, cka_matrix
from transferlens.analysis.cka_estimators import (
    MinibatchCKA,
    cka_from_grams,
    linear_cka,
    rbf_cka,
    shifted_gram_reference,
)

SCALES = [1e-3, 1e-6, 1e6]
RELATIVE = 1e-9


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def related_features(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(seed)
    latent = torch.randn(n, 4, generator=g, dtype=torch.float64)
    x = latent @ torch.randn(4, 10, generator=g, dtype=torch.float64)
    x = x + 0.7 * torch.randn(n, 10, generator=g, dtype=torch.float64) + 3.0
    y = torch.tanh(latent @ torch.randn(4, 24, generator=g, dtype=torch.float64))
    return x, y + 0.4 * torch.randn(n, 24, generator=g, dtype=torch.float64)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator(seed), dtype=torch.float64))
    return q


def assert_same(value: float, reference: float) -> None:
    assert math.isfinite(reference) and 0.05 < abs(reference) < 0.99  # not a trivial value
    assert value == pytest.approx(reference, rel=RELATIVE, abs=0.0)


FULL_ESTIMATORS = {
    "linear": lambda x, y: linear_cka(x, y),
    "linear debiased": lambda x, y: linear_cka(x, y, debiased=True),
    "rbf": lambda x, y: rbf_cka(x, y),
    "rbf debiased": lambda x, y: rbf_cka(x, y, debiased=True),
}


@pytest.mark.parametrize("name", sorted(FULL_ESTIMATORS))
@pytest.mark.parametrize("scale", SCALES)
def test_full_data_cka_is_invariant_to_scale_and_rotation(name, scale):
    estimator = FULL_ESTIMATORS[name]
    x, y = related_features()
    reference = estimator(x, y)
    q = orthogonal(x.shape[1], 1)
    assert_same(estimator(scale * x, y), reference)
    assert_same(estimator(x @ q, y), reference)
    assert_same(estimator(scale * (x @ q), y), reference)
    assert_same(estimator(scale * x, y / scale), reference)  # the two sides far apart


def minibatch_cka(features_x: torch.Tensor, features_y: torch.Tensor, batch: int = 16) -> float:
    accumulator = MinibatchCKA(1, 1)
    for start in range(0, len(features_x), batch):
        accumulator.update([features_x[start : start + batch]], [features_y[start : start + batch]])
    return float(accumulator.compute()[0, 0])


def minibatch_cka_from_grams(features_x: torch.Tensor, features_y: torch.Tensor) -> float:
    accumulator = MinibatchCKA(1, 1)
    for start in range(0, len(features_x), 16):
        grams = [shifted_gram_reference(f[start : start + 16]) for f in (features_x, features_y)]
        accumulator.update_grams(grams[:1], grams[1:])
    return float(accumulator.compute()[0, 0])


@pytest.mark.parametrize("estimator", [minibatch_cka, minibatch_cka_from_grams])
@pytest.mark.parametrize("scale", SCALES)
def test_minibatch_cka_is_invariant_to_scale_and_rotation(estimator, scale):
    x, y = related_features(n=80)
    reference = estimator(x, y)
    q = orthogonal(x.shape[1], 2)
    assert_same(estimator(scale * x, y), reference)
    assert_same(estimator(x @ q, y), reference)
    assert_same(estimator(scale * (x @ q), y / scale), reference)


class TinyNet(nn.Module):
    """conv -> ReLU -> pooled linear ``embed`` -> head; float64."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.embed = nn.Linear(5 * 4 * 4, 12)
        self.head = nn.Linear(12, 3)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = nn.functional.avg_pool2d(torch.relu(self.conv(x)), 2)
        return self.head(torch.relu(self.embed(pooled.flatten(1))))


def transformed(model: TinyNet, layer: str, scale: float, seed: int) -> TinyNet:
    """A copy whose ``layer`` output is ``scale X Q`` for an orthogonal ``Q``: ``conv``'s
    channels mixed by ``scale Q^T`` (an orthogonal map of its flattened features), or
    ``embed``'s weights and bias ``scale Q^T W``, ``scale Q^T b``. The layers after it
    change too: only ``layer`` is compared."""
    other = copy.deepcopy(model)
    module = getattr(other, layer)
    with torch.no_grad():
        rotate = scale * orthogonal(module.weight.shape[0], seed).T
        module.weight.copy_(torch.einsum("oc,c...->o...", rotate, module.weight))
        module.bias.copy_(rotate @ module.bias)
    return other


def perturbed(model: TinyNet, size: float, seed: int) -> TinyNet:
    """A copy with Gaussian noise on every weight: a related, not identical, model."""
    other = copy.deepcopy(model)
    g = generator(seed)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter += size * torch.randn(parameter.shape, generator=g, dtype=parameter.dtype)
    return other


def float64_loader(n: int = 72, batch_size: int = 24) -> DataLoader:
    images = torch.randn(n, 3, 8, 8, generator=generator(5), dtype=torch.float64)
    return DataLoader(
        TensorDataset(images, torch.zeros(n, dtype=torch.long)), batch_size=batch_size
    )


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("layer", ["conv", "embed"])
def test_cka_many_and_cka_matrix_on_tiny_models_are_invariant(layer, scale):
    model = TinyNet(0)
    models = {"x": model, "xq": transformed(model, layer, scale, 3), "y": perturbed(model, 0.3, 1)}
    pairs = [("plain", "x", "y"), ("moved", "xq", "y"), ("self", "x", "xq")]
    result = cka_many(models, float64_loader(), pairs=pairs, layers=[layer], n_bootstrap=0)
    plain, moved, itself = result.pair_values[:, 0]
    assert_same(moved, plain)
    assert itself == pytest.approx(1.0, rel=1e-12)
    matrix = cka_matrix(models["xq"], models["y"], float64_loader(), [layer], [layer, "head"])
    reference = cka_matrix(model, models["y"], float64_loader(), [layer], [layer, "head"])
    for j in range(2):
        assert_same(matrix.matrix[0, j], reference.matrix[0, j])


def test_float32_models_as_the_study_runs_them_keep_the_invariance_to_float32_rounding():
    model = TinyNet(0)
    models = {
        "x": copy.deepcopy(model).float(),
        "y": perturbed(model, 0.3, 1).float(),
        "x2": transformed(model, "embed", 2.0**-10, 3).float(),
        "x3": transformed(model, "embed", 1e-3, 3).float(),
    }
    images, labels = float64_loader().dataset.tensors
    loader = DataLoader(TensorDataset(images.float(), labels), batch_size=24)
    pairs = [("plain", "x", "y"), ("pow2", "x2", "y"), ("milli", "x3", "y")]
    values = cka_many(models, loader, pairs=pairs, layers=["embed"], n_bootstrap=0)
    plain, pow2, milli = values.pair_values[:, 0]
    assert pow2 == pytest.approx(plain, rel=1e-5)  # the rotation rounds in float32
    assert milli == pytest.approx(plain, rel=1e-5)


def test_a_representation_without_variance_gives_nan_at_any_scale():
    x, y = related_features()
    for value in (0.0, 1e-300, 0.1, 7.3e5):
        constant = torch.full_like(x, value)
        assert math.isnan(linear_cka(constant, y))
        assert math.isnan(linear_cka(constant, y, debiased=True))
        assert math.isnan(rbf_cka(constant, y, sigma=1.0))
        assert math.isnan(rbf_cka(constant, y, sigma=1.0, debiased=True))
        assert math.isnan(minibatch_cka(constant, y))
    ones = torch.ones(10, 10, dtype=torch.float64)
    assert math.isnan(cka_from_grams(ones, shifted_gram_reference(y[:10]), debiased=True))
    # One constant column among varying ones changes nothing: it is exactly 0 once centred.
    with_constant = torch.cat([x, torch.full((len(x), 1), 0.1, dtype=torch.float64)], dim=1)
    assert linear_cka(with_constant, y) == pytest.approx(linear_cka(x, y), rel=1e-12)


def test_tiny_features_are_not_pushed_towards_zero():
    # An epsilon added to a denominator would shrink CKA at small scales: none is there.
    x, y = related_features()
    for scale in (1e-30, 1e-60):
        assert linear_cka(scale * x, scale * y) == pytest.approx(linear_cka(x, y), rel=RELATIVE)
