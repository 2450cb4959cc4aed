"""Units as the weight-space analyses take them: names, {unit: prefixes} or a ModuleMap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferlens.analysis.statedict import (
    as_units,
    check_modules,
    default_modules,
    keys_under,
    unit_of,
)
from transferlens.errors import UserInputError
from transferlens.models import build_model, criticality_modules
from transferlens.models.module_map import module_map

KEYS = ["stem.weight", "cls_token", "blocks.0.w", "blocks.1.w", "blocks.10.w", "head.weight"]


def test_every_way_of_naming_units_gives_name_to_prefixes():
    assert as_units(["stem", "head"]) == {"stem": ("stem",), "head": ("head",)}
    assert as_units({"front": ["stem", "cls_token"], "top": "head"}) == {
        "front": ("stem", "cls_token"),
        "top": ("head",),
    }
    resnet = build_model("fixup_resnet10", 4, stem="cifar", width=4)
    units = module_map(resnet)
    assert as_units(units) == units.members()
    with pytest.raises(UserInputError, match="listed twice: stem"):
        as_units(["stem", "head", "stem"])
    with pytest.raises(UserInputError, match="modules must be"):
        as_units("stem")


def test_keys_under_a_unit_are_those_under_any_member_and_only_whole_names():
    assert keys_under(KEYS, "blocks.1") == ["blocks.1.w"]  # not blocks.10
    assert keys_under(KEYS, ("stem", "cls_token")) == ["stem.weight", "cls_token"]


def test_check_modules_names_the_missing_member():
    assert list(check_modules(KEYS, ["stem", "head"])) == ["stem", "head"]
    with pytest.raises(UserInputError, match=r"module 'nothing' does not exist"):
        check_modules(KEYS, ["stem", "nothing"])
    with pytest.raises(UserInputError, match=r"'nothing' \(unit 'front'\)"):
        check_modules(KEYS, {"front": ["stem", "nothing"]})


def test_resnet_default_units_are_the_papers_modules():
    for name in ("fixup_resnet10", "resnet18"):
        model = build_model(name, 4)
        units = default_modules(model)
        assert list(units) == criticality_modules(model)
        assert all(members == (unit,) for unit, members in units.items())


def test_a_model_without_a_head_to_find_keeps_its_top_level_units():
    class Headless(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Linear(2, 2)
            self.last = nn.Linear(2, 2)
            self.scale = nn.Parameter(torch.ones(1))  # no classifier head to find

    model = Headless()
    assert default_modules(model) == {"first": ("first",), "last": ("last",), "scale": ("scale",)}
    state = {"a.weight": model.first.weight, "b.bias": model.last.bias}
    assert default_modules(state) == {"a": ("a",), "b": ("b",)}


def test_unit_of_a_name_is_the_unit_it_names_or_the_module_itself():
    units = {"front": ("stem", "cls_token")}
    assert unit_of("front", units) == ("front", ("stem", "cls_token"))
    assert unit_of("blocks.0", units) == ("blocks.0", ("blocks.0",))
    assert unit_of("head") == ("head", ("head",))
