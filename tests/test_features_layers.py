"""Layer names beyond a module's output: ``name:in``, ``name:out.<key>``, token reductions,
their refusals, and that the hooks keep no more than the reduced features."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tiny_models import build
from transferlens.analysis.features import FeatureExtractor, capture_features, stream_features
from transferlens.analysis.layer_specs import (
    LayerSpec,
    check_tokens,
    describe_reduction,
    parse_layer,
)
from transferlens.errors import UserInputError
from user_models.cifar_resnet import CifarResNet


def images(n: int = 12, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def loader(x: torch.Tensor, batch_size: int = 5) -> DataLoader:
    return DataLoader(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), batch_size)


def tiny_vit() -> nn.Module:
    """timm's ViT at 32 px, patch 4, width 32: blocks give [N, 1 + 64, 32]."""
    return build("timm_vit", num_classes=3).eval()


def vit_blocks_by_hand(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's ViT up to the output of ``blocks`` ([N, 1 + 64 patches, 32]), step by step."""
    with torch.no_grad():
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        return model.blocks(tokens)


# ---- the syntax --------------------------------------------------------------------


def test_layer_names_parse_to_module_side_and_key():
    assert parse_layer("layer1") == LayerSpec("layer1", "layer1", "out")
    assert parse_layer("fc:in") == LayerSpec("fc:in", "fc", "in")
    assert parse_layer("enc:out.hidden_states.3") == LayerSpec(
        "enc:out.hidden_states.3", "enc", "out", ("hidden_states", "3")
    )
    for bad in ("fc:input", ":in", "fc:out.", "fc:out..a", "fc:in.x"):
        with pytest.raises(UserInputError, match="name:out.<key>") as error:
            parse_layer(bad)
        assert repr(bad) in str(error.value)


def test_unknown_modules_keep_the_did_you_mean_error_with_the_suffix():
    with pytest.raises(UserInputError) as error:
        FeatureExtractor(CifarResNet(), ["linaer:in"])
    message = str(error.value)
    assert "unknown layer 'linaer:in' in CifarResNet; did you mean 'linear:in'?" in message
    assert "\n" not in message


# ---- name:in ------------------------------------------------------------------------


def test_the_input_of_the_head_is_the_pooled_features_computed_by_hand():
    model = CifarResNet().eval()
    x = images()
    captured = capture_features(model, loader(x), ["linear:in", "linear"])
    with torch.no_grad():
        out = F.relu(model.bn1(model.conv1(x)))
        out = model.layer3(model.layer2(model.layer1(out)))
        pooled = F.avg_pool2d(out, out.size()[3]).view(len(x), -1)
    torch.testing.assert_close(captured["linear:in"], pooled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(captured["linear"], model.linear(pooled), rtol=1e-5, atol=1e-6)


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


def test_an_input_is_read_before_an_in_place_module_changes_it():
    model = InPlace().eval()
    x = images(4)
    with FeatureExtractor(model, ["relu:in", "relu"], flatten=False) as extractor:
        features = extractor(x)
    with torch.no_grad():
        before = model.conv(x)
    assert (features["relu:in"] < 0).any()
    torch.testing.assert_close(features["relu:in"], before)
    torch.testing.assert_close(features["relu"], before.relu())


class KeywordCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(input=x)


def test_an_input_given_by_keyword_only_is_refused_in_one_line():
    with (
        FeatureExtractor(KeywordCall(), ["inner:in"]) as extractor,
        pytest.raises(UserInputError, match="without a positional input") as error,
    ):
        extractor(torch.randn(5, 4))
    assert "keyword arguments only: input" in str(error.value)


# ---- outputs that are not one tensor ------------------------------------------------


class Structured(nn.Module):
    """A module whose output is a tuple, a dict or a Hugging Face ModelOutput."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.proj = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor):
        hidden, extra = self.proj(x), x * 2
        if self.kind == "tuple":
            return hidden, extra
        if self.kind == "dict":
            return {"hidden": hidden, "extra": extra}
        from transformers.modeling_outputs import BaseModelOutput

        return BaseModelOutput(last_hidden_state=hidden, hidden_states=(extra, hidden))


class Wrapper(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.body = Structured(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out[0] if isinstance(out, tuple) else next(iter(out.values()))


def run(kind: str, layers: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    with FeatureExtractor(Wrapper(kind).eval(), layers) as extractor:
        return extractor(x)


def test_tuple_outputs_by_index_or_element_zero_without_a_key():
    x = torch.randn(5, 4)
    features = run("tuple", ["body", "body:out.0", "body:out.1", "body:out.-1"], x)
    torch.testing.assert_close(features["body"], features["body:out.0"])
    torch.testing.assert_close(features["body:out.1"], x * 2)
    torch.testing.assert_close(features["body:out.-1"], x * 2)
    with pytest.raises(UserInputError, match=r"'2' is not an index .* tuple of 2 \(0..1\)"):
        run("tuple", ["body:out.2"], x)


def test_dict_outputs_by_key_and_refused_without_one():
    x = torch.randn(5, 4)
    torch.testing.assert_close(run("dict", ["body:out.extra"], x)["body:out.extra"], x * 2)
    with pytest.raises(UserInputError) as error:
        run("dict", ["body"], x)
    assert str(error.value) == (
        "layer 'body' gives a dict with keys hidden, extra; pick one by name, "
        "e.g. 'body:out.hidden'"
    )
    with pytest.raises(UserInputError, match=r"no key 'hiden' in the output \(keys: hidden, extra"):
        run("dict", ["body:out.hiden"], x)
    with pytest.raises(UserInputError, match="the output is a Tensor, which has no key 'x'"):
        run("dict", ["body.proj:out.x"], x)


def test_model_outputs_by_key_and_chained_index():
    pytest.importorskip("transformers")
    x = torch.randn(5, 4)
    layers = ["body:out.last_hidden_state", "body:out.hidden_states.0", "body:out.hidden_states"]
    features = run("model_output", layers, x)
    torch.testing.assert_close(features["body:out.hidden_states.0"], x * 2)
    # A tuple reached by a key gives its element 0, as a tuple output does.
    torch.testing.assert_close(features["body:out.hidden_states"], x * 2)
    with pytest.raises(UserInputError, match="BaseModelOutput with keys last_hidden_state"):
        run("model_output", ["body"], x)


# ---- tokens -------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", ["all", "cls", "mean"])
def test_token_reductions_of_a_vit_equal_the_hand_computation(tokens):
    model = tiny_vit()
    x = images(6, size=32)
    features = capture_features(model, loader(x, 4), ["blocks", "head:in"], tokens=tokens)
    blocks = vit_blocks_by_hand(model, x)
    assert blocks.shape == (6, 65, 32)
    expected = {"all": blocks.flatten(1), "cls": blocks[:, 0], "mean": blocks.mean(dim=1)}
    torch.testing.assert_close(features["blocks"], expected[tokens], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        head_in = model.forward_head(model.norm(blocks), pre_logits=True)
    torch.testing.assert_close(features["head:in"], head_in, rtol=1e-5, atol=1e-5)  # 2-D: as is


def test_tokens_apply_to_three_dimensional_outputs_only():
    x = images(4, size=8)
    conv = nn.Conv2d(3, 5, 3, padding=1).eval()
    net = nn.Sequential(conv).eval()
    for tokens in ("cls", "mean"):
        with FeatureExtractor(net, ["0"], tokens=tokens) as extractor:
            torch.testing.assert_close(extractor(x)["0"], conv(x).detach().flatten(1))


def test_bad_tokens_are_refused_and_cls_needs_a_class_token():
    with pytest.raises(UserInputError, match="tokens must be one of all, cls, mean"):
        FeatureExtractor(nn.Sequential(nn.ReLU()), ["0"], tokens="first")

    class NoToken:
        prefix_tokens = 0

    with pytest.raises(UserInputError, match="tokens: cls needs a class token") as error:
        check_tokens("cls", NoToken())
    assert "\n" not in str(error.value)
    assert check_tokens("mean", NoToken()) == "mean"


def test_the_shapes_and_reductions_the_table_reports():
    assert describe_reduction((64, 16, 16), "cls") == ("64x16x16", "flatten", 16384)
    assert describe_reduction((65, 64), "all") == ("65x64", "tokens=all", 4160)
    assert describe_reduction((65, 64), "cls") == ("65x64", "tokens=cls", 64)
    assert describe_reduction((65, 64), "mean") == ("65x64", "tokens=mean", 64)
    assert describe_reduction((10,), "cls") == ("10", "as is", 10)


# ---- streaming: nothing bigger than the reduced features is kept ----------------------


@pytest.mark.parametrize("tokens", ["cls", "mean"])
def test_reduced_token_features_do_not_keep_the_whole_output_alive(tokens):
    model = tiny_vit()
    outputs = []
    spy = model.blocks.register_forward_hook(lambda m, i, out: outputs.append(weakref.ref(out)))
    with FeatureExtractor(model, ["blocks"], tokens=tokens) as extractor:
        features = extractor(images(6, size=32))["blocks"]
    spy.remove()
    gc.collect()
    assert outputs and outputs[0]() is None  # the [6, 65, 32] output is gone
    assert features.shape == (6, 32)
    assert features.untyped_storage().nbytes() == 6 * 32 * features.element_size()


def test_a_reduction_streams_and_the_shapes_are_recorded_per_model():
    model = tiny_vit()
    shapes: dict = {}
    x = images(10, size=32)
    sizes = []
    stream = stream_features(
        {"a": model, "b": model}, loader(x, 5), {"a": ["blocks", "head:in"], "b": ["blocks"]},
        reduce=lambda t: t @ t.T, tokens="mean", shapes=shapes,
    )  # fmt: skip
    for features, _ in stream:
        sizes.append([tuple(t.shape) for t in features["a"]])
    assert sizes == [[(5, 5), (5, 5)]] * 2  # Grams only: no batch of features is held
    assert shapes == {"a": {"blocks": (65, 32), "head:in": (32,)}, "b": {"blocks": (65, 32)}}
