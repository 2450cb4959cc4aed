"""Model registry, the paper's Fixup ResNets, head handling and weight loading."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from transferlens.errors import UserInputError
from transferlens.io import atomic_save_safetensors
from transferlens.models import (
    FixupBasicBlock,
    FixupBottleneck,
    build_model,
    criticality_modules,
    head_prefix,
    list_families,
    list_models,
    load_backbone,
    load_weights_file,
    register_model,
    reset_head,
    stage_names,
)
from transferlens.models import registry as registry_module

NORM_LAYERS = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)
FIXUP_SMALL = ["fixup_resnet10", "fixup_resnet18", "fixup_resnet20"]
TORCHVISION = ["resnet18", "resnet34", "resnet50"]


@pytest.fixture(scope="module")
def fixup50() -> nn.Module:
    torch.manual_seed(0)
    return build_model("fixup_resnet50", 1000)


def _scalars(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.numel() == 1}


# --- the paper's Fixup ResNet-50 -------------------------------------------------------


def test_fixup_resnet50_parameter_count_and_names(fixup50):
    total = sum(p.numel() for p in fixup50.parameters())
    torchvision_total = sum(p.numel() for p in torchvision.models.resnet50().parameters())
    bn_total = sum(
        p.numel()
        for m in torchvision.models.resnet50().modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in m.parameters()
    )
    # ResNet-50 without BN's affine parameters plus 7 scalars per block and the 2 outer ones.
    assert total == torchvision_total - bn_total + 16 * 7 + 2
    assert 25_400_000 <= total <= 25_700_000
    assert [len(getattr(fixup50, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert criticality_modules(fixup50)[0] == "conv1"
    assert criticality_modules(fixup50)[-1] == "fc"
    assert len(criticality_modules(fixup50)) == 18
    assert stage_names(fixup50) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert tuple(fixup50.conv1.weight.shape) == (64, 3, 7, 7)
    assert head_prefix(fixup50) == "fc"


def test_fixup_resnet50_has_no_normalisation(fixup50):
    assert not [name for name, m in fixup50.named_modules() if isinstance(m, NORM_LAYERS)]
    assert not list(fixup50.buffers())  # no running statistics of any kind


def test_fixup_resnet50_initial_values(fixup50):
    blocks = [m for m in fixup50.modules() if isinstance(m, FixupBottleneck)]
    assert len(blocks) == 16
    for block in blocks:
        assert torch.count_nonzero(block.conv3.weight) == 0
    scalars = _scalars(fixup50)
    assert len(scalars) == 16 * 7 + 2
    for name, value in scalars.items():
        expected = 1.0 if name.endswith("scale") else 0.0
        assert value.item() == expected, name
        assert "bias" in name or "scale" in name  # the paper's lr/10 rule finds them by name
    assert "conv1.output_bias" in scalars and "fc.input_bias" in scalars
    assert fixup50.fc.weight.abs().sum() > 0  # default init, not Fixup's zero head
    bound = 1 / math.sqrt(2048)
    assert fixup50.fc.weight.abs().max() <= bound and fixup50.fc.bias.abs().max() <= bound


def test_fixup_resnet50_init_scales(fixup50):
    # He normal with fan_out, times L^(-1/4) with L = 16 for conv1/conv2 of every branch.
    block = fixup50.layer4[0]
    for conv in (block.conv1, block.conv2):
        fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
        expected = math.sqrt(2 / fan_out) * 16 ** (-0.25)
        assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)
        assert conv.weight.mean().item() == pytest.approx(0.0, abs=expected * 0.02)
    shortcut = block.downsample.weight
    assert shortcut.std().item() == pytest.approx(math.sqrt(2 / shortcut.shape[0]), rel=0.02)


def test_fixup_basic_block_init_scales():
    model = build_model("fixup_resnet18", 10, width=64)  # L = 8 basic blocks, m = 2
    block = model.layer4[0]  # 256 -> 512 channels: fan_out (512 * 9) differs from fan_in
    fan_out = 512 * 9
    expected = math.sqrt(2 / fan_out) * 8 ** (-0.5)
    assert block.conv1.weight.std().item() == pytest.approx(expected, rel=0.02)
    for basic in (m for m in model.modules() if isinstance(m, FixupBasicBlock)):
        assert torch.count_nonzero(basic.conv2.weight) == 0


def _bottleneck_reference(block: FixupBottleneck, x: torch.Tensor) -> torch.Tensor:
    """The Fixup bottleneck written from the formula with functional ops."""
    b = {name: p.item() for name, p in block.named_parameters() if p.numel() == 1}
    stride = block.conv2.stride
    out = F.relu(F.conv2d(x + b["bias1a"], block.conv1.weight) + b["bias1b"])
    out = F.relu(
        F.conv2d(out + b["bias2a"], block.conv2.weight, stride=stride, padding=1) + b["bias2b"]
    )
    out = F.conv2d(out + b["bias3a"], block.conv3.weight) * b["scale"] + b["bias3b"]
    shortcut = F.conv2d(x + b["bias1a"], block.downsample.weight, stride=stride)
    return F.relu(out + shortcut)


def test_fixup_bottleneck_matches_formula():
    torch.manual_seed(1)
    block = FixupBottleneck(8, 4, stride=2).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_()  # non-trivial scalars and a non-zero conv3
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(block(x), _bottleneck_reference(block, x))


def test_fixup_blocks_start_as_identity():
    # conv3 = 0 and every bias = 0: a block without shortcut conv maps x >= 0 to itself.
    torch.manual_seed(2)
    model = build_model("fixup_resnet50", 3, stem="cifar", width=8)
    x = torch.rand(2, 32, 8, 8)
    torch.testing.assert_close(model.layer1[1](x), x)
    basic = build_model("fixup_resnet10", 3, stem="cifar")
    y = torch.rand(2, 16, 8, 8)
    torch.testing.assert_close(basic.layer1[0](y), y)


# --- small models, stems and kwargs ----------------------------------------------------


@pytest.mark.parametrize("name", FIXUP_SMALL)
@pytest.mark.parametrize(("stem", "size", "width"), [("cifar", 32, 16), ("imagenet", 64, 64)])
def test_fixup_small_forward_and_widths(name, stem, size, width):
    model = build_model(name, 7, stem=stem)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    assert model.conv1.out_channels == width
    last = [getattr(model, f"layer{i}")[-1].conv2.out_channels for i in range(1, 5)]
    assert last == [width, 2 * width, 4 * width, 8 * width]
    assert not [m for m in model.modules() if isinstance(m, NORM_LAYERS)]


def test_depths_of_small_models():
    depths = {
        name: [len(getattr(build_model(name, 2, stem="cifar"), f"layer{i}")) for i in range(1, 5)]
        for name in FIXUP_SMALL
    }
    assert depths == {
        "fixup_resnet10": [1, 1, 1, 1],
        "fixup_resnet18": [2, 2, 2, 2],
        "fixup_resnet20": [2, 2, 3, 2],
    }


def test_conv1_output_is_the_biased_feature_map():
    model = build_model("fixup_resnet10", 4, stem="cifar", width=8, in_channels=1)
    with torch.no_grad():
        model.conv1.output_bias.fill_(0.5)
    captured = {}
    # The hook keeps a view of the output, as feature extractors do: nothing downstream
    # (e.g. an in-place ReLU) may overwrite it.
    model.conv1.register_forward_hook(lambda m, i, o: captured.setdefault("out", o.detach()))
    x = torch.randn(2, 1, 32, 32)
    model(x)
    expected = F.conv2d(x, model.conv1.weight, padding=1) + 0.5
    torch.testing.assert_close(captured["out"], expected)
    assert captured["out"].shape == (2, 8, 32, 32)  # cifar stem: stride 1, no pooling


def test_imagenet_stem_halves_then_pools():
    model = build_model("fixup_resnet10", 4, width=8)
    features = model.maxpool(model.relu(model.conv1(torch.randn(1, 3, 64, 64))))
    assert features.shape == (1, 8, 16, 16)


@pytest.mark.parametrize("name", [name for name in list_models() if ":" not in name])
def test_every_registered_model_runs(name):
    torch.manual_seed(0)
    model = build_model(name, 5)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert head_prefix(model) == "fc"
    assert stage_names(model) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    _assert_partition(model)


def test_torchvision_state_dict_loads_into_ours():
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    ours = build_model("resnet18", 1000)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours.eval()(x), reference.eval()(x))
    transferred = build_model("resnet18", 10)
    skipped = load_backbone(transferred, reference.state_dict())
    assert skipped == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(transferred.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    torch.testing.assert_close(transferred.bn1.running_var, reference.bn1.running_var)


def test_timm_model_builds():
    pytest.importorskip("timm")
    model = build_model("timm:resnet18", 6, pretrained=False)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 6)
    assert head_prefix(model) == "fc"
    assert stage_names(model) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    _assert_partition(model)
    reset_head(model, 3, seed=0)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(UserInputError, match="no_such_net"):
        build_model("timm:no_such_net", 3)
    with pytest.raises(UserInputError, match="timm:resnet18"):
        build_model("timm:resnet18", 3, bogus_option=1)


# --- registry errors ---------------------------------------------------------------------


def test_list_models_names_every_family():
    names = list_models()
    for expected in ["fixup_resnet50", *FIXUP_SMALL, *TORCHVISION, "timm:<name>"]:
        assert expected in names
    assert list_families() == ["hf", "timm"]


def test_missing_timm_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(UserInputError, match="timm"):
        build_model("timm:resnet18", 3)


def test_unknown_name_lists_known_names():
    with pytest.raises(UserInputError, match="no_such_model.*fixup_resnet50.*timm:<name>"):
        build_model("no_such_model", 10)


@pytest.mark.parametrize(
    ("name", "kwargs", "culprit"),
    [
        ("fixup_resnet10", {"depth": 3}, "depth"),
        ("fixup_resnet10", {"stem": "tiny"}, "stem"),
        ("fixup_resnet10", {"width": 0}, "width"),
        ("fixup_resnet50", {"in_channels": 2.5}, "in_channels"),
        ("resnet18", {"pretrained": True}, "pretrained"),
        ("resnet18", {"weights": "NOT_A_WEIGHT"}, "NOT_A_WEIGHT"),
    ],
)
def test_bad_kwargs_name_the_culprit(name, kwargs, culprit):
    with pytest.raises(UserInputError, match=culprit):
        build_model(name, 10, **kwargs)


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(UserInputError, match="num_classes"):
        build_model("fixup_resnet10", num_classes)


def test_register_model_decorator():
    @register_model("_test_tiny_linear")
    def tiny(num_classes: int, hidden: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(hidden, num_classes))

    try:
        assert "_test_tiny_linear" in list_models()
        assert build_model("_test_tiny_linear", 3, hidden=2)(torch.randn(5, 2)).shape == (5, 3)
        with pytest.raises(UserInputError, match="width"):
            build_model("_test_tiny_linear", 3, width=2)
    finally:
        registry_module._BUILDERS.pop("_test_tiny_linear")


# --- heads, partitions -------------------------------------------------------------------


def test_reset_head_is_seeded_default_linear_and_touches_only_the_head():
    model = build_model("fixup_resnet10", 10, stem="cifar")
    with torch.no_grad():
        model.fc.input_bias.fill_(1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.get_rng_state()
    reset_head(model, 4, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the global RNG is untouched
    after = model.state_dict()
    for key, value in before.items():
        if not key.startswith("fc."):
            assert torch.equal(after[key], value), key
    assert model.fc.out_features == 4 and model.fc.input_bias.item() == 0.0
    torch.manual_seed(7)
    default = nn.Linear(model.fc.in_features, 4)  # PyTorch's own default init
    torch.testing.assert_close(model.fc.weight, default.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.fc.bias, default.bias, rtol=0, atol=0)
    again = reset_head(build_model("fixup_resnet10", 10, stem="cifar"), 4, seed=7)
    assert torch.equal(again.fc.weight, model.fc.weight)
    other = reset_head(build_model("fixup_resnet10", 10, stem="cifar"), 4, seed=8)
    assert not torch.equal(other.fc.weight, model.fc.weight)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_reset_head_without_seed_uses_global_rng():
    model = build_model("resnet18", 10)
    torch.manual_seed(11)
    reset_head(model, 3)
    torch.manual_seed(11)
    default = nn.Linear(512, 3)
    assert torch.equal(model.fc.weight, default.weight)
    assert type(model.fc) is nn.Linear


def _assert_partition(model: nn.Module) -> None:
    modules = criticality_modules(model)
    owners: dict[str, list[str]] = {name: [] for name, _ in model.named_parameters()}
    for module in modules:
        for name, _ in model.get_submodule(module).named_parameters(prefix=module):
            owners[name].append(module)
    assert all(len(found) == 1 for found in owners.values()), owners


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        (
            "fixup_resnet10",
            {"stem": "cifar"},
            ["conv1", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "fc"],
        ),
        ("fixup_resnet20", {}, None),
        ("resnet18", {}, None),
    ],
)
def test_criticality_modules_partition_parameters(name, kwargs, expected):
    model = build_model(name, 3, **kwargs)
    _assert_partition(model)
    if expected is not None:
        assert criticality_modules(model) == expected
    if name == "resnet18":
        assert criticality_modules(model)[:3] == ["conv1", "bn1", "layer1.0"]


def test_partition_of_fixup50(fixup50):
    _assert_partition(fixup50)


def test_non_resnet_models_answer_from_their_module_map():
    # Not a ResNet: the units and stage outputs of the module map (the generic rule).
    blocks = nn.Sequential(nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), blocks, nn.Flatten(), nn.Linear(4, 2))
    assert criticality_modules(model) == ["0", "1.0", "1.1", "3"]
    assert stage_names(model) == ["0", "1"]
    assert head_prefix(model) == "3"
    headless = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(UserInputError, match="cannot find the classifier head of Sequential"):
        criticality_modules(headless)
    with pytest.raises(UserInputError, match="cannot find the classifier head of Sequential"):
        stage_names(headless)


# --- weights files and P-T ---------------------------------------------------------------


def test_load_backbone_round_trip(tmp_path):
    torch.manual_seed(4)
    pretrained = build_model("fixup_resnet10", 10, stem="cifar")
    with torch.no_grad():
        for p in pretrained.parameters():
            if p.numel() == 1:
                p.fill_(0.25)  # make the scalars distinguishable from a fresh init
    path = tmp_path / "p.safetensors"
    atomic_save_safetensors(pretrained.state_dict(), path)
    transferred = build_model("fixup_resnet10", 4, stem="cifar")
    skipped = load_backbone(transferred, load_weights_file(path))
    assert skipped == ["fc.bias", "fc.input_bias", "fc.weight"]
    source = pretrained.state_dict()
    for key, value in transferred.state_dict().items():
        if key.startswith("fc."):
            continue
        assert torch.equal(value, source[key]), key
    assert transferred.fc.out_features == 4 and transferred.fc.input_bias.item() == 0.0
    # Same number of classes: only the head differs from P after a reset.
    same = reset_head(build_model("fixup_resnet10", 10, stem="cifar"), 10, seed=0)
    load_backbone(same, source)
    differing = {k for k, v in same.state_dict().items() if not torch.equal(v, source[k])}
    assert differing == {"fc.weight", "fc.bias", "fc.input_bias"}


def test_load_backbone_reports_mismatches():
    fixup = build_model("fixup_resnet10", 4, stem="cifar")
    other = build_model("fixup_resnet10", 4, stem="cifar", width=8).state_dict()
    with pytest.raises(UserInputError, match=r"shape mismatches \[conv1.weight"):
        load_backbone(fixup, other)
    with pytest.raises(UserInputError, match="missing keys.*unexpected keys.*bn1"):
        load_backbone(fixup, build_model("resnet18", 4).state_dict())
    reduced = dict(build_model("fixup_resnet10", 4, stem="cifar").state_dict())
    del reduced["layer2.0.conv1.weight"]
    before = fixup.layer2[0].conv1.weight.clone()
    load_backbone(fixup, reduced, strict_backbone=False)
    assert torch.equal(fixup.layer2[0].conv1.weight, before)
    assert torch.equal(fixup.layer1[0].conv1.weight, reduced["layer1.0.conv1.weight"])


def test_load_weights_file_unwraps_and_strips(tmp_path):
    tensors = {"conv1.weight": torch.ones(2, 2), "fc.bias": torch.zeros(3)}
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tensors.items()}}
    path = tmp_path / "ckpt.pth.tar"
    torch.save(wrapped, path)
    loaded = load_weights_file(path)
    assert set(loaded) == set(tensors)
    assert torch.equal(loaded["conv1.weight"], tensors["conv1.weight"])
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in tensors.items()}}, tmp_path / "w.pt")
    assert set(load_weights_file(tmp_path / "w.pt")) == set(tensors)
    # The common .th suffix, and the wrapper key of PyTorch's own checkpoint tutorial.
    torch.save({"epoch": 9, "model_state_dict": tensors}, tmp_path / "resnet20.th")
    assert set(load_weights_file(tmp_path / "resnet20.th")) == set(tensors)
    torch.save({"net": tensors, "acc": 93.0}, tmp_path / "ckpt.bin")
    assert set(load_weights_file(tmp_path / "ckpt.bin")) == set(tensors)


def test_check_weights_file_names_the_file_and_the_first_key_that_does_not_fit(tmp_path):
    from transferlens.models.weights import backbone_fit, check_weights_file

    kwargs = {"stem": "cifar", "width": 4}
    fits = tmp_path / "fits.pth"
    torch.save(build_model("fixup_resnet10", 7, **kwargs).state_dict(), fits)
    check_weights_file(fits, "fixup_resnet10", kwargs)  # another head size is fine
    reduced = build_model("fixup_resnet10", 7, **kwargs).state_dict()
    del reduced["layer1.0.conv1.weight"]
    torch.save(reduced, tmp_path / "reduced.pth")
    with pytest.raises(UserInputError) as caught:
        check_weights_file(tmp_path / "reduced.pth", "fixup_resnet10", kwargs)
    assert str(caught.value) == (
        f"{tmp_path / 'reduced.pth'}: does not fit model 'fixup_resnet10': "
        "missing key 'layer1.0.conv1.weight'"
    )
    wide = build_model("fixup_resnet10", 7, stem="cifar", width=8).state_dict()
    fit = backbone_fit(build_model("fixup_resnet10", 2, **kwargs), wide)
    assert not fit.fits and fit.skipped == ["fc.bias", "fc.input_bias", "fc.weight"]
    assert fit.mismatched["conv1.weight"] == ((8, 3, 3, 3), (4, 3, 3, 3))


def test_reference_fixup_checkpoint_names_are_mapped(tmp_path):
    ours = build_model("fixup_resnet10", 5, stem="cifar").state_dict()
    renamed = {"conv1.output_bias": "bias1", "fc.input_bias": "bias2"}
    reference = {f"module.{renamed.get(k, k)}": v for k, v in ours.items()}
    path = tmp_path / "reference.pth"
    torch.save({"state_dict": reference}, path)
    assert set(load_weights_file(path)) == set(ours)


class _NotAllowed:
    pass


def test_load_weights_file_errors(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_weights_file(tmp_path / "absent.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(UserInputError, match="corrupt.safetensors"):
        load_weights_file(corrupt)
    pickled = tmp_path / "object.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": _NotAllowed()}, pickled)
    with pytest.raises(UserInputError, match="object.pt"):  # weights_only refuses the object
        load_weights_file(pickled)
    wrong = tmp_path / "weights.npz"
    wrong.write_bytes(b"")
    with pytest.raises(UserInputError, match="unsupported"):
        load_weights_file(wrong)
    not_tensors = tmp_path / "numbers.pt"
    torch.save({"w": 1.0}, not_tensors)
    with pytest.raises(UserInputError, match="'w' is not a tensor"):
        load_weights_file(not_tensors)
