"""CKA on architectures other than ResNets: default layers from the module map, tokens,
the ``cka_layers`` table, and the study adapter's tables."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tiny_models import build, images
from transferlens.analysis import cka, cka_many, cka_matrix
from transferlens.analysis.cka_kernels import ShiftedGram
from transferlens.errors import UserInputError
from transferlens.models.module_map import module_map
from transferlens.results import TABLE_COLUMNS
from transferlens.study.analyses.cka import analyse_cka
from transferlens.study.analyses.context import TargetModels
from transferlens.study.analyses.settings import CkaSettings
from user_models.cifar_resnet import CifarResNet


def image_loader(n: int = 32, batch_size: int = 8) -> DataLoader:
    data = TensorDataset(images(n, seed=1), torch.zeros(n, dtype=torch.long))
    return DataLoader(data, batch_size=batch_size)


def tiny_vit(seed: int = 0) -> nn.Module:
    return build("timm_vit", num_classes=3, seed=seed)


@pytest.mark.parametrize(
    ("name", "tokens"),
    [
        ("timm_vit", "all"),
        ("timm_vit", "cls"),
        ("timm_vit", "mean"),
        ("timm_convnext", "all"),
        ("timm_swin", "all"),
        ("hf_vit", "cls"),
    ],
)
def test_a_model_and_its_copy_have_cka_one_at_every_default_layer(name, tokens):
    model = build(name, num_classes=3)
    result = cka(model, copy.deepcopy(model), image_loader(), n_bootstrap=20, tokens=tokens)
    layers = module_map(model).cka_layers
    assert list(result.layers_a) == layers and layers[-1].endswith(":in")
    frame = result.to_frame().set_index("layer")
    if tokens == "cls":
        # Token 0 of the stem's output is the class token (plus its position), the same
        # for every image: CKA is undefined there, not one; from the first block on, one.
        assert frame.loc[layers[0], ["cka", "cka_low", "cka_high"]].isna().all()
        frame = frame.drop(index=layers[0])
    np.testing.assert_allclose(frame[["cka", "cka_low", "cka_high"]].to_numpy(), 1.0, atol=1e-5)
    assert result.settings["tokens"] == tokens


def test_features_the_same_for_every_example_have_an_exactly_zero_gram():
    # A large mean: summed in float32 it is off by a rounding error, which alone
    # would make a Gram of noise (and CKA 1 of a constant with itself).
    row = 1000 + torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    for n in (7, 64, 130):
        assert torch.equal(ShiftedGram()(row.expand(n, 50).clone()), torch.zeros(n, n))
    varied = torch.cat([row, row + 1e-3, row.expand(5, 50)])
    assert ShiftedGram()(varied).abs().max() > 0


def test_tokens_change_what_is_compared_in_token_layers_only():
    model_a, model_b = tiny_vit(0), tiny_vit(1)
    frames = {
        tokens: cka(
            model_a,
            model_b,
            image_loader(),
            layers=["blocks", "head:in"],
            n_bootstrap=0,
            tokens=tokens,
        )
        .to_frame()
        .set_index("layer")["cka"]
        for tokens in ("all", "cls", "mean")
    }
    assert frames["all"]["blocks"] != pytest.approx(frames["mean"]["blocks"])
    assert frames["cls"]["blocks"] != pytest.approx(frames["mean"]["blocks"])
    # The head's input is [N, D]: the same whatever the tokens setting.
    assert frames["all"]["head:in"] == frames["cls"]["head:in"] == frames["mean"]["head:in"]


def test_cls_is_refused_for_a_model_whose_map_has_no_class_token():
    model = tiny_vit()
    no_token = dataclasses.replace(module_map(model), prefix_tokens=0)
    with pytest.raises(UserInputError, match="tokens: cls needs a class token"):
        cka(model, model, image_loader(), tokens="cls", module_map=no_token)
    with pytest.raises(UserInputError, match="tokens: cls needs a class token"):
        cka_matrix(model, model, image_loader(), tokens="cls", module_map=no_token)
    with pytest.raises(UserInputError, match="tokens must be one of"):
        cka(model, model, image_loader(), tokens="first")


def test_a_given_map_gives_the_default_layers():
    model = CifarResNet()
    explicit = module_map(model, ["conv1", "bn1", "layer*", "linear"])
    result = cka_many(
        {"a": model, "b": copy.deepcopy(model)}, image_loader(), n_bootstrap=0, module_map=explicit
    )
    assert list(result.layers_a) == explicit.cka_layers
    assert result.layers_a[-1] == "linear:in"
    np.testing.assert_allclose(result.to_frame()["cka"], 1.0, atol=1e-5)


def test_the_layers_table_states_stage_depth_shape_reduction_and_features():
    model = tiny_vit()
    mm = module_map(model)
    frame = cka(model, model, image_loader(), n_bootstrap=0, tokens="cls").layers_frame(mm)
    assert tuple(frame.columns) == TABLE_COLUMNS["cka_layers"]
    assert list(frame["layer"]) == mm.cka_layers
    for _, row in frame.iterrows():
        unit = mm.unit_of_layer(row["layer"])
        assert (row["stage"], row["depth"]) == (unit.stage, unit.depth)
    named = cka(
        model, model, image_loader(), layers=["blocks", "head:in", "pos_drop"], n_bootstrap=0,
        tokens="cls",
    )  # fmt: skip
    rows = named.layers_frame(mm).set_index("layer")
    columns = ["shape", "reduction", "features"]
    assert rows.loc["blocks", columns].tolist() == ["65x32", "tokens=cls", 32]
    assert rows.loc["head:in", columns].tolist() == ["32", "as is", 32]
    # A parameter-free module outside every unit: compared, with no stage to name.
    assert rows.loc["pos_drop", ["stage", "depth"]].isna().all()
    conv = cka(CifarResNet(), CifarResNet(), image_loader(), n_bootstrap=0)
    conv_rows = conv.layers_frame(module_map(CifarResNet())).set_index("layer")
    assert conv_rows.loc["layer1", ["shape", "reduction", "features"]].tolist() == [
        "8x32x32", "flatten", 8192,
    ]  # fmt: skip


# ---- the study adapter --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    run_id: str


class StubContext:
    """What analyse_cka reads of a StudyContext: targets, source, models, loaders."""

    def __init__(self, models: dict[str, nn.Module]) -> None:
        self.models = models
        self.module_map = module_map(models["pt0"])
        self.source = None
        self.targets = {"t": TargetModels("t", pt={0: Run("pt0"), 1: Run("pt1")})}
        self.targets["t"].rit = {0: Run("rit0")}

    def member_model(self, member: Run) -> nn.Module:
        return self.models[member.run_id]

    def test_loader(self, target: str, max_examples: int | None = None) -> DataLoader:
        return image_loader(max_examples or 32)


def test_the_study_adapter_writes_the_layers_table_with_the_default_layers():
    models = {key: tiny_vit(seed) for seed, key in enumerate(["pt0", "pt1", "rit0"])}
    settings = CkaSettings(n_bootstrap=5, tokens="mean")
    tables = analyse_cka(StubContext(models), settings)
    assert set(tables) == {"cka", "cka_pairs", "cka_matrix", "cka_matrix_pairs", "cka_layers"}
    layers = module_map(models["pt0"]).cka_layers
    assert list(tables["cka_layers"]["layer"]) == layers
    assert set(tables["cka"]["layer"]) == set(layers)
    assert set(tables["cka_layers"]["reduction"]) >= {"tokens=mean", "as is"}
    assert set(tables["cka_matrix"]["layer_a"]) == set(layers)
    assert set(tables["cka_matrix"]["pair"]) == {"PT-PT", "PT-RIT"}
