"""Parameter distance per unit and per stage of the module map, on every kind of network,
against float64 references written from the formulas (analysis/distance.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiny_models import USER_CNN_MODULES, build
from transferlens.analysis import parameter_distance
from transferlens.errors import UserInputError
from transferlens.models.module_map import ModuleMap, module_map

ARCHITECTURES = ("timm_vit", "timm_convnext", "cifar_resnet", "user_cnn")


def pair(name: str, classes: tuple[int, int] = (3, 3)) -> tuple[torch.nn.Module, torch.nn.Module]:
    return build(name, classes[0], seed=0).eval(), build(name, classes[1], seed=1).eval()


def the_map(name: str, model: torch.nn.Module) -> ModuleMap:
    return module_map(model, USER_CNN_MODULES if name == "user_cnn" else None)


def unit_l2(a: torch.nn.Module, b: torch.nn.Module, members: tuple[str, ...]) -> float:
    """sqrt(sum of (a - b)^2) over the float64 parameters under any of ``members``."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    names = [n for n in pa if any(n == m or n.startswith(m + ".") for m in members)]
    diff = [
        pa[n].detach().double().numpy().ravel() - pb[n].detach().double().numpy().ravel()
        for n in names
    ]
    return float(np.sqrt(np.sum(np.concatenate(diff) ** 2)))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_units_and_stages_equal_the_formulas(name):
    a, b = pair(name)
    units = the_map(name, a)
    result = parameter_distance(a, b, modules=units)
    assert list(result.per_module) == units.unit_names
    expected = {unit.name: unit_l2(a, b, unit.members) for unit in units.units}
    for unit, value in expected.items():
        assert result.per_module[unit] == pytest.approx(value, rel=1e-12), unit
    # l2(stage) = sqrt(sum over its units of l2(unit)^2), the float64 reference:
    assert list(result.per_stage) == [stage.name for stage in units.stages]
    for stage in units.stages:
        reference = math.sqrt(sum(expected[unit] ** 2 for unit in stage.units))
        assert result.per_stage[stage.name] == pytest.approx(reference, rel=1e-12), stage.name
    # The units partition the parameters: their squares add up to the whole.
    whole = math.sqrt(sum(value**2 for value in expected.values()))
    assert result.total == pytest.approx(whole, rel=1e-12)
    frame = result.stages_frame()
    assert list(frame.columns) == ["stage", "l2"] and len(frame) == len(units.stages)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_model_is_at_distance_zero_from_itself(name):
    a, _ = pair(name)
    result = parameter_distance(a, a, modules=the_map(name, a))
    assert result.total == 0.0
    assert set(result.per_module.values()) == {0.0}
    assert set(result.per_stage.values()) == {0.0}


def test_the_default_units_are_the_models_map_with_its_stages():
    a, b = pair("timm_vit")
    default = parameter_distance(a, b)
    given = parameter_distance(a, b, modules=module_map(a))
    assert default.per_module == given.per_module and default.per_stage == given.per_stage
    # The ViT's stem is one unit of three members (class token, positions, patch embedding).
    stem = unit_l2(a, b, ("cls_token", "pos_embed", "patch_embed"))
    assert default.per_module["stem"] == pytest.approx(stem, rel=1e-12)
    # Bare state dicts given the map: the same numbers.
    states = parameter_distance(a.state_dict(), b.state_dict(), modules=module_map(a))
    assert states.per_module == pytest.approx(default.per_module, rel=1e-12)
    assert states.per_stage == pytest.approx(default.per_stage, rel=1e-12)


@pytest.mark.parametrize(("name", "head_unit"), [("timm_vit", "head"), ("timm_convnext", "head")])
def test_a_head_of_another_shape_makes_its_unit_and_stage_nan(name, head_unit):
    a, b = pair(name, classes=(3, 5))  # P-T against P: the heads cannot be compared
    units = module_map(a)
    result = parameter_distance(a, b, modules=units)
    assert result.excluded  # the classifier (ConvNeXt: head.fc, inside the unit "head")
    assert math.isnan(result.per_module[head_unit])
    head_stage = units.unit(head_unit).stage
    assert math.isnan(result.per_stage[head_stage])
    for stage in units.stages:
        if stage.name != head_stage:
            expected = math.sqrt(sum(result.per_module[u] ** 2 for u in stage.units))
            assert result.per_stage[stage.name] == pytest.approx(expected, rel=1e-12)


def test_units_as_a_mapping_and_their_mistakes():
    a, b = pair("timm_vit")
    mapping = {"front": ["patch_embed", "cls_token"], "blocks": ["blocks"]}
    result = parameter_distance(a, b, modules=mapping)
    assert list(result.per_module) == ["front", "blocks"]
    assert result.per_module["front"] == pytest.approx(
        unit_l2(a, b, ("patch_embed", "cls_token")), rel=1e-12
    )
    assert result.per_stage is None  # stages are known from a module map only
    assert result.settings["modules"] == {
        "front": ["patch_embed", "cls_token"],
        "blocks": ["blocks"],
    }
    with pytest.raises(UserInputError, match=r"'nothing' \(unit 'front'\)"):
        parameter_distance(a, b, modules={"front": ["patch_embed", "nothing"]})
    # A list keeps its meaning: each name is its own unit.
    listed = parameter_distance(a, b, modules=["blocks.0", "head"])
    assert list(listed.per_module) == ["blocks.0", "head"]
