"""Permutation alignment (transferlens.analysis.align): exactness for every supported family.

For each family: (a) the aligned copy of B computes B's function; (b) a B built as an
exact random permutation of A is recovered exactly by weight matching (every entry
equal to A's); (c) the interpolation barrier between A and that B is > 0 before
alignment and 0 after. Labels are model A's own predictions, so A is "trained" on
them (loss low, accuracy 1) and the midpoint of A and a permuted A is worse.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tiny_models import images, require, timm_convnext, timm_vit
from transferlens.analysis import barrier, interpolation_curve
from transferlens.analysis.permutation_groups import PermutationGroup, permute_state
from transferlens.analysis.unit_alignment import align, alignment
from transferlens.errors import UserInputError
from transferlens.models import build_model


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Fixup zero-initialises its last convs and BatchNorm starts at (0, 1): move every
    parameter and statistic off its special value so that no two units are alike."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(noise.abs() + 0.5)
            else:
                tensor.add_(0.1 * noise)
    return model.eval()


def fixup(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return _randomise(build_model("fixup_resnet10", 10, stem="cifar", width=8), seed)


def resnet18(seed: int) -> nn.Module:
    import torchvision

    torch.manual_seed(seed)
    return _randomise(torchvision.models.resnet18(num_classes=5), seed)


def vit(seed: int) -> nn.Module:
    require("timm_vit")
    return _randomise(timm_vit(num_classes=5, seed=seed), seed)


def convnext(seed: int) -> nn.Module:
    require("timm_convnext")
    return _randomise(timm_convnext(num_classes=5, seed=seed), seed)


FAMILIES = {"fixup": fixup, "resnet18": resnet18, "vit": vit, "convnext": convnext}


def random_permutations(groups: tuple[PermutationGroup, ...], seed: int) -> dict:
    """A random permutation of every group (whole heads, then units inside each head)."""
    generator = torch.Generator().manual_seed(seed)
    head_orders: dict[str, torch.Tensor] = {}
    perms = {}
    for group in groups:
        if group.heads == 1:
            perms[group.name] = torch.randperm(group.size, generator=generator)
            continue
        order = head_orders.setdefault(
            group.head_set, torch.randperm(group.heads, generator=generator)
        )
        width = group.size // group.heads
        perms[group.name] = torch.cat(
            [order[i] * width + torch.randperm(width, generator=generator) for i in order.argsort()]
        )
    return perms


def permuted_copy(model: nn.Module, groups: tuple[PermutationGroup, ...], seed: int) -> nn.Module:
    copied = copy.deepcopy(model)
    copied.load_state_dict(
        permute_state(model.state_dict(), groups, random_permutations(groups, seed))
    )
    return copied.eval()


def own_labels_loader(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches labelled by ``model``'s own predictions."""
    batches = []
    with torch.no_grad():
        for seed in range(2):
            inputs = images(8, seed=seed)
            batches.append((inputs, model(inputs).argmax(1)))
    return batches


def max_difference(model_a: nn.Module, model_b: nn.Module) -> float:
    state_b = model_b.state_dict()
    return max(
        (value.double() - state_b[key].double()).abs().max().item()
        for key, value in model_a.state_dict().items()
    )


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request) -> str:
    return request.param


def test_aligned_model_computes_the_same_function(family: str) -> None:
    model_a, model_b = FAMILIES[family](0), FAMILIES[family](1)
    result = alignment(model_a, model_b, max_iter=3)
    x = images(4)
    with torch.no_grad():
        expected, got = model_b(x), result.model.eval()(x)
    assert result.changed, "two random networks should need some permutation"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    for group in result.groups:  # every permutation is one
        assert torch.equal(result.permutations[group.name].sort().values, torch.arange(group.size))


def test_weight_matching_recovers_an_exact_permutation_and_removes_the_barrier(family: str) -> None:
    model_a = FAMILIES[family](0)
    groups = alignment(model_a, model_a, max_iter=1).groups
    model_b = permuted_copy(model_a, groups, seed=7)
    assert max_difference(model_a, model_b) > 0
    aligned = align(model_a, model_b)
    assert max_difference(model_a, aligned) == 0.0

    loader = own_labels_loader(model_a)
    settings = {"lams": [0.0, 0.5, 1.0], "bn_mode": "interpolate"}
    before = barrier(interpolation_curve(model_a, model_b, loader, "multiclass", **settings))
    after = barrier(interpolation_curve(model_a, aligned, loader, "multiclass", **settings))
    assert before[0] > 1e-3 and before[1] >= 0
    assert after[0] == pytest.approx(0.0, abs=1e-6) and after[1] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", ["fixup", "vit", "convnext"])
def test_activation_matching_recovers_an_exact_permutation(name: str) -> None:
    model_a = FAMILIES[name](0)
    groups = alignment(model_a, model_a, max_iter=1).groups
    model_b = permuted_copy(model_a, groups, seed=3)
    loader = [(images(8, seed=seed), None) for seed in range(3)]
    aligned = align(model_a, model_b, loader, method="activations")
    assert max_difference(model_a, aligned) == 0.0


def test_groups_of_a_fixup_resnet() -> None:
    groups = {g.name: g for g in alignment(fixup(0), fixup(1), max_iter=1).groups}
    # the stem and layer1 form one stream (layer1.0 has no downsample); scalars never move
    stream = {axis.key for axis in groups["conv1"].axes}
    assert {"conv1.weight", "layer1.0.conv1.weight", "layer1.0.conv2.weight"} <= stream
    assert not any(key.endswith(("bias1a", "scale", "output_bias")) for g in groups.values()
                   for key in (a.key for a in g.axes))  # fmt: skip
    assert ("fc.weight", 1) in {(a.key, a.axis) for a in groups["layer4.0.conv2"].axes}
    assert all(not (a.key == "fc.weight" and a.axis == 0) for g in groups.values() for a in g.axes)
    assert all(
        not (a.key == "conv1.weight" and a.axis == 1) for g in groups.values() for a in g.axes
    )


def test_groups_of_a_vit_permute_whole_heads() -> None:
    groups = {g.name: g for g in alignment(vit(0), vit(1), max_iter=1).groups}
    qk, v = groups["blocks.0.attn.qk"], groups["blocks.0.attn.v"]
    assert qk.heads == v.heads == 2 and qk.head_set == v.head_set == "blocks.0.attn"
    stream = {axis.key for axis in groups["patch_embed.proj"].axes}
    assert {"cls_token", "pos_embed", "blocks.1.attn.proj.weight", "norm.weight"} <= stream


def test_refusals_are_one_line() -> None:
    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.grouped = nn.Conv2d(8, 8, 3, groups=2)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.grouped(self.conv(x)).mean((2, 3)))

    with pytest.raises(UserInputError, match="grouped convolution") as error:
        align(Grouped(), Grouped())
    assert "\n" not in str(error.value) and "'grouped'" in str(error.value)
    with pytest.raises(UserInputError, match="method"):
        align(fixup(0), fixup(1), method="nope")
    with pytest.raises(UserInputError, match="needs a loader"):
        align(fixup(0), fixup(1), method="activations")
