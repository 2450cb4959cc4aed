"""The module map of every family: units, stages, classifier, CKA layers, prefix tokens,
lower units; partitions; ResNets unchanged; explicit maps; the cache; heads."""

from __future__ import annotations

import gc
from collections import Counter

import pytest
import torch
from torch import nn

from tiny_models import USER_CNN_MODULES, build, images, logits, require, user_cnn
from transferlens.errors import UserInputError
from transferlens.models import (
    build_model,
    criticality_modules,
    head_prefix,
    module_map,
    reset_head,
    stage_names,
)
from transferlens.models import module_map as module_map_function
from transferlens.models.module_map import _CACHE, check_partition, explicit_map
from transferlens.results import LOWER_DEPTH, lower_units, unit_depths

# name -> family, classifier, prefix tokens, [(stage, units, output)], units with other
# members than themselves, and each CKA layer's per-example shape on 32 px images.
EXPECTED = {
    "timm_vit": (
        "timm-vit",
        "head",
        1,
        [
            ("stem", ["stem"], "norm_pre"),
            ("blocks.0", ["blocks.0"], "blocks.0"),
            ("blocks.1", ["blocks.1"], "blocks.1"),
            ("head", ["norm", "head"], "head"),
        ],
        {"stem": ("cls_token", "pos_embed", "patch_embed")},
        {"norm_pre": (65, 32), "blocks.0": (65, 32), "blocks.1": (65, 32), "head:in": (32,)},
    ),
    "timm_vit_reg": (
        "timm-vit",
        "head",
        3,
        [
            ("stem", ["stem"], "norm_pre"),
            ("blocks.0", ["blocks.0"], "blocks.0"),
            ("blocks.1", ["blocks.1"], "blocks.1"),
            ("head", ["norm", "head"], "head"),
        ],
        {"stem": ("cls_token", "reg_token", "pos_embed", "patch_embed")},
        {"norm_pre": (67, 32), "blocks.0": (67, 32), "blocks.1": (67, 32), "head:in": (32,)},
    ),
    "timm_deit": (
        "timm-vit",
        "head",
        1,
        [
            ("stem", ["stem"], "norm_pre"),
            ("blocks.0", ["blocks.0"], "blocks.0"),
            ("blocks.1", ["blocks.1"], "blocks.1"),
            ("head", ["norm", "head"], "head"),
        ],
        {"stem": ("cls_token", "pos_embed", "patch_embed")},
        {"norm_pre": (65, 32), "blocks.0": (65, 32), "blocks.1": (65, 32), "head:in": (32,)},
    ),
    "timm_convnext": (
        "timm-convnext",
        "head.fc",
        None,
        [
            ("stem", ["stem"], "stem"),
            ("stages.0", ["stages.0.blocks.0"], "stages.0"),
            ("stages.1", ["stages.1.downsample", "stages.1.blocks.0"], "stages.1"),
            ("stages.2", ["stages.2.downsample", "stages.2.blocks.0"], "stages.2"),
            ("stages.3", ["stages.3.downsample", "stages.3.blocks.0"], "stages.3"),
            ("head", ["head"], "head.fc"),
        ],
        {},
        {
            "stem": (8, 8, 8),
            "stages.0": (8, 8, 8),
            "stages.1": (16, 4, 4),
            "stages.2": (32, 2, 2),
            "stages.3": (64, 1, 1),
            "head.fc:in": (64,),
        },
    ),
    "timm_swin": (
        "timm-swin",
        "head.fc",
        None,
        [
            ("stem", ["patch_embed"], "patch_embed"),
            ("layers.0", ["layers.0.blocks.0"], "layers.0"),
            ("layers.1", ["layers.1.downsample", "layers.1.blocks.0"], "layers.1"),
            ("head", ["norm", "head"], "head.fc"),
        ],
        {},
        {"patch_embed": (8, 8, 16), "layers.0": (8, 8, 16), "layers.1": (4, 4, 32)}
        | {"head.fc:in": (32,)},
    ),
    "timm_efficientnet": (
        "timm-efficientnet",
        "classifier",
        None,
        [
            ("stem", ["stem"], "bn1"),
            *[(f"blocks.{i}", [f"blocks.{i}.0"], f"blocks.{i}") for i in range(5)],
            ("head", ["conv_head", "bn2", "classifier"], "classifier"),
        ],
        {"stem": ("conv_stem", "bn1")},
        {"bn1": (24, 16, 16), "blocks.0": (16, 16, 16), "blocks.4": (64, 1, 1)}
        | {"classifier:in": (256,)},
    ),
    "hf_vit": (
        "hf-vit",
        "classifier",
        1,
        [
            ("stem", ["vit.embeddings"], "vit.embeddings"),
            ("vit.layers.0", ["vit.layers.0"], "vit.layers.0"),
            ("vit.layers.1", ["vit.layers.1"], "vit.layers.1"),
            ("head", ["vit.layernorm", "classifier"], "classifier"),
        ],
        {},
        {"vit.embeddings": (65, 32), "vit.layers.0": (65, 32), "vit.layers.1": (65, 32)}
        | {"classifier:in": (32,)},
    ),
    "hf_dinov2": (
        "hf-dinov2",
        "classifier",
        1,
        [
            ("stem", ["dinov2.embeddings"], "dinov2.embeddings"),
            ("dinov2.encoder.layer.0", ["dinov2.encoder.layer.0"], "dinov2.encoder.layer.0"),
            ("dinov2.encoder.layer.1", ["dinov2.encoder.layer.1"], "dinov2.encoder.layer.1"),
            ("head", ["dinov2.layernorm", "classifier"], "classifier"),
        ],
        {},
        # The classifier sees the class token beside the mean patch token: 2 x 32.
        {"dinov2.embeddings": (65, 32), "dinov2.encoder.layer.1": (65, 32)}
        | {"classifier:in": (64,)},
    ),
    "hf_convnext": (
        "hf-convnext",
        "classifier",
        None,
        [
            ("stem", ["convnext.embeddings"], "convnext.embeddings"),
            (
                "convnext.encoder.stages.0",
                ["convnext.encoder.stages.0.layers.0"],
                "convnext.encoder.stages.0",
            ),
            (
                "convnext.encoder.stages.1",
                [
                    "convnext.encoder.stages.1.downsampling_layer",
                    "convnext.encoder.stages.1.layers.0",
                    "convnext.encoder.stages.1.layers.1",
                ],
                "convnext.encoder.stages.1",
            ),
            ("head", ["convnext.layernorm", "classifier"], "classifier"),
        ],
        {},
        {"convnext.embeddings": (8, 8, 8), "convnext.encoder.stages.1": (16, 4, 4)}
        | {"classifier:in": (16,)},
    ),
    "hf_resnet": (
        "hf-resnet",
        "classifier.1",
        None,
        [
            ("stem", ["resnet.embedder"], "resnet.embedder"),
            (
                "resnet.encoder.stages.0",
                ["resnet.encoder.stages.0.layers.0"],
                "resnet.encoder.stages.0",
            ),
            (
                "resnet.encoder.stages.1",
                ["resnet.encoder.stages.1.layers.0", "resnet.encoder.stages.1.layers.1"],
                "resnet.encoder.stages.1",
            ),
            ("head", ["classifier"], "classifier.1"),
        ],
        {},
        {"resnet.embedder": (8, 8, 8), "resnet.encoder.stages.1": (16, 4, 4)}
        | {"classifier.1:in": (16,)},
    ),
    "cifar_resnet": (
        "generic",
        "linear",
        None,
        [
            ("stem", ["conv1", "bn1"], "bn1"),
            ("layer1", ["layer1.0"], "layer1"),
            ("layer2", ["layer2.0"], "layer2"),
            ("layer3", ["layer3.0"], "layer3"),
            ("head", ["linear"], "linear"),
        ],
        {},
        {"bn1": (4, 32, 32), "layer1": (4, 32, 32), "layer3": (16, 8, 8), "linear:in": (16,)},
    ),
}


def _owners(model: nn.Module, members: dict[str, tuple[str, ...]]) -> Counter:
    """How many units own each parameter, computed independently of the map's code."""
    counts: Counter = Counter({name: 0 for name, _ in model.named_parameters()})
    for prefixes in members.values():
        for name in counts:
            if any(name == p or name.startswith(p + ".") for p in prefixes):
                counts[name] += 1
    return counts


def _layer_shapes(model: nn.Module, layers: list[str]) -> dict[str, tuple[int, ...]]:
    """Each layer's per-example output shape (``name:in``: its first input's)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for layer in layers:
        name, _, suffix = layer.partition(":")
        module = model.get_submodule(name)
        if suffix == "in":
            hook = module.register_forward_pre_hook(
                lambda _m, args, layer=layer: shapes.__setitem__(layer, tuple(args[0].shape[1:]))
            )
        else:
            hook = module.register_forward_hook(
                lambda _m, _a, out, layer=layer: shapes.__setitem__(layer, tuple(out.shape[1:]))
            )
        handles.append(hook)
    try:
        with torch.no_grad():
            model.eval()(images(2))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_family_has_its_map(name):
    require(name)
    family, classifier, prefix, stages, members, shapes = EXPECTED[name]
    model = build(name, 3)
    mm = module_map(model)
    assert mm.family == family
    assert mm.classifier == classifier == head_prefix(model)
    assert mm.prefix_tokens == prefix
    assert [(s.name, list(s.units), s.output) for s in mm.stages] == stages
    units = [unit for _, stage_units, _ in stages for unit in stage_units]
    assert mm.unit_names == units
    for unit in mm.units:
        assert unit.members == members.get(unit.name, (unit.name,))
        assert unit.stage == next(s for s, names, _ in stages if unit.name in names)
    assert [unit.depth for unit in mm.units] == unit_depths(len(units))
    assert mm.lower_units == lower_units(units)
    assert mm.lower_units == [u for u, d in zip(units, unit_depths(len(units))) if d < 1 / 3]
    assert mm.cka_layers == [output for _, _, output in stages[:-1]] + [f"{classifier}:in"]
    # Every parameter in exactly one unit.
    assert set(_owners(model, mm.members()).values()) == {1}
    # Every CKA layer is reached by a forward and gives a plain tensor of the known shape.
    measured = _layer_shapes(model, mm.cka_layers)
    assert set(measured) == set(mm.cka_layers)
    assert {layer: measured[layer] for layer in shapes} == shapes
    # Each CKA layer belongs to a unit of its stage (a parameter-free norm_pre: the stem).
    for stage in mm.stages[:-1]:
        assert mm.unit_of_layer(stage.output).stage == stage.name
    assert mm.unit_of_layer(f"{classifier}:in").stage == "head"
    # stage_names and criticality_modules answer from the map for these models.
    assert criticality_modules(model) == units
    assert stage_names(model) == mm.cka_layers[:-1]
    frame = mm.to_frame()
    assert list(frame.columns) == ["unit", "stage", "depth", "lower", "members"]
    assert frame["lower"].tolist() == [u in mm.lower_units for u in units]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_reset_head_replaces_only_the_head_and_the_map_follows(name):
    require(name)
    model = build(name, 5)
    mm = module_map(model)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    reset_head(model, 3, seed=1)
    head = mm.classifier
    after = model.state_dict()
    changed = {
        key for key in after if key not in before or not torch.equal(after[key], before[key])
    }
    assert changed and all(key.startswith(head + ".") for key in changed)
    assert model.get_submodule(head).out_features == 3
    assert logits(model.eval()(images(2))).shape == (2, 3)
    fresh = module_map(model)
    assert fresh is not mm  # the head module was swapped: the cache let go of the old map
    assert fresh.unit_names == mm.unit_names and fresh.classifier == head
    torch.manual_seed(1)  # reset_head's head equals nn.Linear built after manual_seed(seed)
    expected = nn.Linear(model.get_submodule(head).in_features, 3)
    assert torch.equal(model.get_submodule(head).weight, expected.weight)


def test_hugging_face_reset_head_updates_the_label_count():
    require("hf_vit")
    model = build("hf_vit", 5)
    reset_head(model, 3, seed=0)
    assert model.num_labels == 3 and model.config.num_labels == 3
    assert len(model.config.id2label) == 3


def test_dinov2_registers_count_as_prefix_tokens():
    require("hf_dinov2")
    from tiny_models import hf_dinov2

    model = hf_dinov2(3, registers=2)
    mm = module_map(model)
    assert mm.prefix_tokens == 3
    stem = mm.units[0]
    assert stem.name == "dinov2_with_registers.embeddings"
    names = {name for name, _ in model.named_parameters() if name.startswith(stem.name + ".")}
    assert {f"{stem.name}.{p}" for p in ("mask_token", "register_tokens")} <= names
    assert _layer_shapes(model, [mm.cka_layers[0]])[mm.cka_layers[0]] == (67, 32)


# --- ResNets: unchanged ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("fixup_resnet10", {"stem": "cifar", "width": 4}),
        ("fixup_resnet20", {}),
        ("fixup_resnet50", {}),
        ("resnet18", {}),
        ("timm:resnet18", {}),
    ],
)
def test_resnet_maps_are_todays_modules(name, kwargs):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    model = build_model(name, 3, **kwargs)
    mm = module_map(model)
    assert mm.family == "resnet"
    assert mm.unit_names == criticality_modules(model)
    assert mm.cka_layers == [*stage_names(model), "fc:in"]
    assert mm.cka_layers == ["conv1", "layer1", "layer2", "layer3", "layer4", "fc:in"]
    assert mm.classifier == "fc" and mm.prefix_tokens is None
    assert [stage.name for stage in mm.stages] == ["stem", *[f"layer{i}" for i in (1, 2, 3, 4)]] + [
        "head"
    ]
    assert set(_owners(model, mm.members()).values()) == {1}


def test_fixup_resnet50_lower_units_are_the_first_third():
    mm = module_map(build_model("fixup_resnet50", 10))
    assert len(mm.units) == 18
    # depth i / 17 < 1/3 for i <= 5: conv1 and the first five blocks.
    assert mm.lower_units == ["conv1", "layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1"]
    assert all(unit.depth < LOWER_DEPTH for unit in mm.units[:6])


# --- the generic rule and the head finder -------------------------------------------------


def test_head_prefix_finds_a_users_linear_and_hugging_face_classifiers():
    model = build("cifar_resnet", 3)
    assert head_prefix(model) == "linear"
    reset_head(model, 4, seed=0)
    assert model.linear.out_features == 4
    # Last nn.Linear in registration order, wherever it is.
    nested = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
    )
    assert head_prefix(nested) == "2.1"
    with pytest.raises(UserInputError, match="cannot find the classifier head of Sequential"):
        head_prefix(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


def test_generic_map_of_a_list_of_blocks_ending_the_network():
    # A bare Sequential of blocks with no separate head: its last block is the head.
    blocks = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
        nn.Sequential(nn.Flatten(), nn.Linear(4, 2)),
    )
    model = nn.Module()
    model.stem = nn.Conv2d(3, 3, 1)
    model.blocks = blocks
    mm = module_map(model)
    assert mm.unit_names == ["stem", "blocks.0", "blocks.1"]
    assert [stage.name for stage in mm.stages] == ["stem", "blocks", "head"]
    assert mm.classifier == "blocks.1.1"


def test_a_model_with_own_parameters_keeps_them_in_its_stem():
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.token = nn.Parameter(torch.zeros(1, 4))
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)) for _ in range(2)
            )
            self.out = nn.Linear(4, 2)

    mm = module_map(Tokens())
    assert mm.unit_names == ["token", "blocks.0", "blocks.1", "out"]
    assert mm.stages[0].name == "stem" and mm.stages[0].output == "token"
    assert mm.cka_layers == ["token", "blocks", "out:in"]


# --- explicit maps -------------------------------------------------------------------------


def test_explicit_map_as_a_list_with_globs():
    model = build("cifar_resnet", 3)
    mm = module_map(model, ["conv1", "bn1", "layer*", "linear"])
    assert mm.family == "explicit"
    assert mm.unit_names == ["conv1", "bn1", "layer1", "layer2", "layer3", "linear"]
    # Consecutive units sharing their first name component form a stage.
    assert [(s.name, list(s.units), s.output) for s in mm.stages] == [
        ("conv1", ["conv1"], "conv1"),
        ("bn1", ["bn1"], "bn1"),
        ("layer1", ["layer1"], "layer1"),
        ("layer2", ["layer2"], "layer2"),
        ("layer3", ["layer3"], "layer3"),
        ("head", ["linear"], "linear"),
    ]
    assert mm.classifier == "linear"
    blocks = module_map(model, ["conv1", "bn1", "layer*.*", "linear"])
    assert blocks.unit_names == ["conv1", "bn1", "layer1.0", "layer2.0", "layer3.0", "linear"]
    assert [s.name for s in blocks.stages] == ["conv1", "bn1", "layer1", "layer2", "layer3", "head"]


def test_explicit_map_by_stage():
    model = user_cnn(3)
    mm = module_map(model, USER_CNN_MODULES)
    assert [(s.name, list(s.units), s.output) for s in mm.stages] == [
        ("stem", ["entry"], "entry"),
        ("body", ["block_a", "block_b"], "block_b"),
        ("head", ["classify"], "classify"),
    ]
    assert mm.classifier == "classify"
    assert mm.cka_layers == ["entry", "block_b", "classify:in"]
    assert module_map(model, USER_CNN_MODULES) is mm  # cached per spec
    assert module_map(model, ["entry", "block_a", "block_b", "classify"]) is not mm
    assert module_map(model) is not mm  # the derived map is another entry


def test_explicit_map_refusals_name_the_culprit():
    model = user_cnn(3)
    cases = [
        (["entry", "block_a", "classify"], r"parameter 'block_b\.0\.weight' is in no unit"),
        (
            ["entry", "block_*", "block_a.0", "classify"],
            r"parameter 'block_a\.0\.weight' is counted twice \(units 'block_a', 'block_a\.0'\)",
        ),
        (["entry", "block_*", "nope", "classify"], r"'nope' matches no module or parameter"),
        (["entry", "block_?x", "classify"], r"'block_\?x' matches no module"),
        ("entry", "modules must be a non-empty list"),
        ([], "modules must be a non-empty list"),
        ({"stem": "entry"}, "stage 'stem' must list"),
    ]
    for modules, message in cases:
        with pytest.raises(UserInputError, match=message) as error:
            module_map(model, modules)
        assert "\n" not in str(error.value)


def test_explicit_map_whose_head_has_no_linear_is_refused():
    model = user_cnn(3)
    with pytest.raises(UserInputError, match="head 'block_b' of UserCNN holds no nn.Linear"):
        explicit_map(model, {"stem": ["entry", "classify"], "body": ["block_a", "block_b"]})


def test_check_partition_refuses_a_map_of_another_model():
    mm = module_map(build("cifar_resnet", 3))
    with pytest.raises(UserInputError, match="unit 'conv1' names 'conv1', which is neither"):
        check_partition(user_cnn(3), mm)


# --- the cache -----------------------------------------------------------------------------


def test_the_map_is_computed_once_per_model_and_let_go_with_it():
    model = build("cifar_resnet", 3)
    first = module_map(model)
    assert module_map(model) is first
    other = build("cifar_resnet", 3)
    assert module_map(other) is not first and module_map(other) == first
    model.extra = nn.Linear(2, 2)  # a new module: the structure changed
    changed = module_map(model)
    assert changed is not first and changed.unit_names[-1] == "extra"
    del model.extra
    assert module_map(model).unit_names == first.unit_names
    count = len(_CACHE)
    del model, other
    gc.collect()
    assert len(_CACHE) == count - 2


def test_module_map_is_exported_as_the_function():
    assert callable(module_map_function) and module_map_function is module_map


def test_reset_head_of_an_explicit_maps_classifier():
    model = user_cnn(5)
    head = module_map(model, USER_CNN_MODULES).classifier
    before = {key: value.clone() for key, value in model.state_dict().items()}
    reset_head(model, 3, seed=2, head=head)
    assert model.classify.out_features == 3
    assert all(
        torch.equal(value, before[key])
        for key, value in model.state_dict().items()
        if not key.startswith("classify.")
    )
    torch.manual_seed(2)
    assert torch.equal(model.classify.weight, nn.Linear(8, 3).weight)
    with pytest.raises(UserInputError, match="the head 'nope' is not a module of UserCNN"):
        reset_head(model, 3, head="nope")
    with pytest.raises(UserInputError, match=r"cannot reset the head 'block_a' \(Sequential\)"):
        reset_head(model, 3, head="block_a")


def test_a_classifier_found_inside_a_block_is_refused():
    # A convolutional head: the last nn.Linear is inside a block, not the head.
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(30, 30)),
        nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)),
        nn.Conv2d(4, 2, 1),
    )
    with pytest.raises(UserInputError, match=r"the classifier found, '0\.1', is not in its head"):
        module_map(model)
    # Given explicitly, the last unit is the head whatever its kind.
    assert module_map(model, ["0", "1", "2"]).classifier == "2"
