"""Rewinding and criticality per unit of the module map, on a ViT, a ConvNeXt, someone
else's CIFAR ResNet and a user's CNN: the answers known without computing them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tiny_models import USER_CNN_MODULES, build, images
from transferlens.analysis import criticality_grid, module_criticality, path_grid, rewind_module
from transferlens.analysis.statedict import under_any
from transferlens.errors import UserInputError
from transferlens.models.module_map import ModuleMap, module_map

ARCHITECTURES = ("timm_vit", "timm_convnext", "cifar_resnet", "user_cnn")
CLASSES = 3


def final_and_init(name: str) -> tuple[nn.Module, nn.Module]:
    """Two seeds of one architecture stand for a trained network and its init."""
    return build(name, CLASSES, seed=1).eval(), build(name, CLASSES, seed=0).eval()


def the_map(name: str, model: nn.Module) -> ModuleMap:
    return module_map(model, USER_CNN_MODULES if name == "user_cnn" else None)


def loader(count: int = 8) -> DataLoader:
    x = images(count, seed=3)
    y = torch.arange(count) % CLASSES
    return DataLoader(TensorDataset(x, y), batch_size=4)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_rewinding_a_unit_to_its_own_final_changes_nothing(name):
    final, _ = final_and_init(name)
    units = the_map(name, final)
    x = images(2)
    with torch.no_grad():
        expected = final(x)
        for unit in units.unit_names:
            same = rewind_module(final, final, unit, modules=units)
            assert torch.equal(same(x), expected), unit


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_rewinding_every_unit_of_a_stage_sets_the_stage_to_its_init(name):
    final, init = final_and_init(name)
    units = the_map(name, final)
    stage = units.stages[1]  # the first stage after the stem
    members = [m for unit in stage.units for m in units.unit(unit).members]
    rewound = rewind_module(final, init, list(stage.units), modules=units).state_dict()
    state_final, state_init = final.state_dict(), init.state_dict()
    inside = [key for key in rewound if under_any(key, members)]
    assert inside
    for key, value in rewound.items():
        expected = state_init[key] if key in inside else state_final[key]
        assert torch.equal(value, expected), key


def test_the_vit_stem_is_rewound_as_one_unit_of_three_members():
    final, init = final_and_init("timm_vit")
    rewound = rewind_module(final, init, "stem")  # the default map knows the unit
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        assert torch.equal(rewound.state_dict()[name], init.state_dict()[name]), name
    assert torch.equal(rewound.blocks[0].attn.qkv.weight, final.blocks[0].attn.qkv.weight)
    with pytest.raises(UserInputError, match="stems"):
        rewind_module(final, init, "stems")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_criticality_reports_every_unit(name):
    final, init = final_and_init(name)
    units = the_map(name, final)
    alphas, sigmas = criticality_grid(2, 2)
    heard: list[str] = []
    result = module_criticality(
        final, init, loader(), "multiclass", definition="reference", modules=units, alphas=alphas, sigmas=sigmas,
        n_noise=1, progress=heard.append,
    )  # fmt: skip
    frame = result.to_frame()
    assert list(frame["module"]) == [*units.unit_names, "network"]
    assert heard[0] == f"module 1/{len(units.units)} {units.unit_names[0]}"
    values = frame["criticality"].iloc[:-1]
    assert all(v >= 0 for v in values)
    assert frame["criticality"].iloc[-1] == pytest.approx(float(values.sum()))
    # With the map given or left to the default (the same map), the same numbers.
    if name != "user_cnn":
        default = module_criticality(
            final,
            init,
            loader(),
            "multiclass",
            definition="reference",
            alphas=alphas,
            sigmas=sigmas,
            n_noise=1,
        )
        assert default.to_frame().equals(frame)


class Unused(nn.Module):
    """A CNN with a unit its forward never reads: its parameters cannot change the output."""

    def __init__(self) -> None:
        super().__init__()
        self.entry = nn.Conv2d(3, 4, 3, padding=1)
        self.spare = nn.Linear(4, 4)
        self.head = nn.Linear(4, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.entry(x)).mean(dim=(2, 3)))


def test_a_unit_that_does_not_change_the_output_has_criticality_zero():
    torch.manual_seed(0)
    final, init = Unused().eval(), Unused().eval()
    units = module_map(final, ["entry", "spare", "head"])
    result = module_criticality(
        final, init, loader(), "multiclass", definition="reference", modules=units, n_noise=2,
        alphas=[0.0, 0.5, 1.0], sigmas=[1e-16, 0.5, 1.0],
    )  # fmt: skip
    spare = {m.module: m for m in result.modules}["spare"]
    assert not torch.equal(final.spare.weight, init.spare.weight)  # it did move
    assert spare.criticality == 0.0 and spare.alpha == 0.0
    assert spare.rewind_metric == result.final_metric
    assert spare.loss_at_minimum == pytest.approx(result.reference_loss, rel=1e-12)


def test_the_path_figure_defaults_to_the_first_unit():
    final, init = final_and_init("timm_vit")
    sigmas = [0.0]
    grid = path_grid(final, init, loader(), "multiclass", n_points=3, sigmas=sigmas)
    assert grid.settings["module"] == "stem"
    frame = grid.to_frame()
    assert list(frame["path"]) == ["direct"] * 3
    # The path starts at the rewound stem and ends at the final network.
    rewound = path_grid(rewind_module(final, init, "stem"), init, loader(), "multiclass",
                        n_points=2, sigmas=sigmas).to_frame()  # fmt: skip
    assert frame["loss"].iloc[0] == pytest.approx(rewound["loss"].iloc[-1], rel=1e-6)
    chosen = path_grid(
        final, init, loader(), "multiclass", module="blocks.1", n_points=2, sigmas=sigmas
    )
    assert chosen.settings["module"] == "blocks.1"
    assert math.isfinite(chosen.to_frame()["loss"].iloc[-1])
    with pytest.raises(UserInputError, match="nothing"):
        path_grid(final, init, loader(), "multiclass", module="nothing", n_points=2)
