"""Every analysis on every kind of model a user brings: a timm ViT, a timm ConvNeXt, a
Hugging Face ViT loaded as ``hf:<folder>``, a user's CNN with an explicit module map and
someone else's CIFAR ResNet (head ``linear``, pooling by a function). Each goes through
CKA, mistakes, distance, interpolation, criticality and rewinding, on the identities
that hold whatever the architecture: a model compared with itself is CKA 1, kappa 1,
distance 0 and barrier 0; a model rewound to itself is unchanged; rewinding a unit
changes that unit's parameters and no other."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tiny_models import USER_CNN_MODULES, build, hf_folder, images, require
from transferlens.analysis import (
    barrier,
    cka,
    criticality_grid,
    interpolation_curve,
    mistakes,
    module_criticality,
    parameter_distance,
    rewind_module,
)
from transferlens.models import build_model, module_map

CLASSES = 5
KINDS = ("timm_vit", "timm_convnext", "hf_vit", "user_cnn", "cifar_resnet")


def model_pair(kind: str, tmp_path) -> tuple[torch.nn.Module, torch.nn.Module, dict | None]:
    """Two differently seeded models of ``kind`` and the explicit map it needs, if any."""
    if kind == "hf_vit":
        require(kind)
        models = []
        for seed in (0, 1):
            folder = hf_folder("vit", tmp_path / f"hf{seed}", CLASSES, seed=seed)
            torch.manual_seed(seed)
            models.append(build_model(f"hf:{folder}", CLASSES))
        return models[0].eval(), models[1].eval(), None
    modules = USER_CNN_MODULES if kind == "user_cnn" else None
    return build(kind, CLASSES, seed=0).eval(), build(kind, CLASSES, seed=1).eval(), modules


def loader() -> DataLoader:
    x = images(12, seed=3)
    y = torch.arange(12) % CLASSES
    return DataLoader(TensorDataset(x, y), batch_size=6)


@pytest.mark.parametrize("kind", KINDS)
def test_every_analysis_on_the_model_and_itself(kind, tmp_path):
    a, b, modules = model_pair(kind, tmp_path)
    units = module_map(a, modules)
    data = loader()

    same = cka(a, a, data, module_map=units, n_bootstrap=0).to_frame()
    assert list(same["layer"]) == units.cka_layers
    # Every layer but a constant one (a class token before any block) is exactly similar.
    assert all(math.isnan(v) or v == pytest.approx(1.0, abs=1e-5) for v in same["cka"])
    other = cka(a, b, data, module_map=units, n_bootstrap=0).to_frame()
    # Unbiased minibatch CKA of unrelated models may dip below 0 on 6-image batches.
    assert other["cka"].dropna().le(1 + 1e-6).all() and other["cka"].notna().any()

    kappa = mistakes(
        {"a": a, "b": b, "a2": a}, [("a-a2", "a", "a2"), ("a-b", "a", "b")], loader=data
    )
    frame = kappa.to_frame().set_index("pair")
    assert frame.loc["a-a2", "only_first_wrong"] == frame.loc["a-a2", "only_second_wrong"] == 0

    distance = parameter_distance(a, b, modules=units)
    assert list(distance.per_module) == units.unit_names
    assert parameter_distance(a, a, modules=units).total == 0.0
    squares = sum(distance.per_module[u] ** 2 for u in units.unit_names)
    assert distance.total == pytest.approx(math.sqrt(squares), rel=1e-6)

    curve = interpolation_curve(a, b, data, "multiclass", lams=[0.0, 0.5, 1.0], train_loader=data)
    assert len(curve.to_frame()) == 3
    flat = interpolation_curve(a, a, data, "multiclass", lams=[0.0, 0.5, 1.0], train_loader=data)
    assert barrier(flat) == (0.0, 0.0)

    alphas, sigmas = criticality_grid(2, 2)
    result = module_criticality(
        a, b, data, "multiclass", modules=units, alphas=alphas, sigmas=sigmas, n_noise=1
    )
    assert [m.module for m in result.modules] == units.unit_names

    first = units.unit_names[0]
    rewound = rewind_module(a, b, first, modules=units)
    changed = {
        key
        for key, value in rewound.state_dict().items()
        if not torch.equal(value, a.state_dict()[key])
    }
    owned = {
        key
        for key in a.state_dict()
        if any(key == m or key.startswith(m + ".") for m in units.unit(first).members)
    }
    assert changed and changed <= owned
    unchanged = rewind_module(a, a, first, modules=units)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in unchanged.state_dict().items())
