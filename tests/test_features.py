"""Forward hooks: what is captured, that hooks go away, errors, one forward per model per batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis.features import (
    FeatureExtractor,
    capture_features,
    default_layers,
    stream_features,
)
from transferlens.errors import UserInputError


class TinyNet(nn.Module):
    """ResNet-like names (conv1, layer1, layer2, fc) on 3x8x8 inputs."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.Dropout(0.5))
        self.layer2 = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1))
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.conv1(x)))
        return self.fc(x.mean(dim=(2, 3)))


class CountingNet(TinyNet):
    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


def loader(n: int = 20, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)
    )
    return DataLoader(data, batch_size=batch_size)


def all_hooks(model: nn.Module) -> int:
    return sum(len(module._forward_hooks) for module in model.modules())


def test_captured_features_equal_the_submodule_outputs():
    model = TinyNet().eval()
    x = torch.randn(5, 3, 8, 8)
    with FeatureExtractor(model, ["conv1", "layer2"]) as extractor:
        features = extractor(x)
    conv1 = model.conv1(x)
    layer2 = model.layer2(model.layer1(conv1))
    assert list(features) == ["conv1", "layer2"]
    torch.testing.assert_close(features["conv1"], conv1.reshape(5, -1))
    torch.testing.assert_close(features["layer2"], layer2.reshape(5, -1))
    assert not features["conv1"].requires_grad


def test_average_pooling_and_unflattened_options():
    model = TinyNet().eval()
    x = torch.randn(5, 3, 8, 8)
    with FeatureExtractor(model, ["conv1", "fc"], pool="avg") as extractor:
        pooled = extractor(x)
    with FeatureExtractor(model, ["conv1"], flatten=False) as extractor:
        raw = extractor(x)
    torch.testing.assert_close(pooled["conv1"], model.conv1(x).mean(dim=(2, 3)))
    assert pooled["fc"].shape == (5, 5)
    assert raw["conv1"].shape == (5, 4, 8, 8)


def test_hooks_are_removed_on_exit_and_on_error():
    model = TinyNet()
    with FeatureExtractor(model, ["conv1", "layer1"]) as extractor:
        assert all_hooks(model) == 2
        extractor(torch.randn(2, 3, 8, 8))
    assert all_hooks(model) == 0
    with pytest.raises(ZeroDivisionError), FeatureExtractor(model, ["conv1", "layer1"]):
        assert all_hooks(model) == 2
        _ = 1 / 0
    assert all_hooks(model) == 0
    with pytest.raises(RuntimeError, match="with"):
        FeatureExtractor(model, ["conv1"])(torch.randn(2, 3, 8, 8))


def test_unknown_layer_lists_the_valid_names_and_a_suggestion():
    with pytest.raises(UserInputError) as error:
        FeatureExtractor(TinyNet(), ["conv1", "layr1"])
    message = str(error.value)
    assert "'layr1'" in message and "did you mean 'layer1'" in message
    assert "conv1, layer1, layer1.0" in message and "\n" not in message


def test_long_lists_of_names_are_shortened():
    model = nn.Sequential(*[nn.ReLU() for _ in range(60)])
    with pytest.raises(UserInputError, match=r"\(35 more\)"):
        FeatureExtractor(model, ["nope"])


def test_bad_layer_lists_and_pool_are_user_errors():
    with pytest.raises(UserInputError, match="twice"):
        FeatureExtractor(TinyNet(), ["conv1", "conv1"])
    with pytest.raises(UserInputError, match="non-empty list"):
        FeatureExtractor(TinyNet(), "conv1")
    with pytest.raises(UserInputError, match="pool"):
        FeatureExtractor(TinyNet(), ["conv1"], pool="max")


def test_each_model_runs_one_forward_per_batch_in_a_multi_model_pass():
    models = {f"m{i}": CountingNet(seed=i) for i in range(3)}
    models["again"] = models["m0"]  # the same object under two keys: still one forward
    batches = 0
    for features, y in stream_features(models, loader(20, 8), ["conv1", "layer1", "layer2"]):
        batches += 1
        assert set(features) == {"m0", "m1", "m2", "again"}
        assert [f.shape[1] for f in features["m1"]] == [4 * 64, 6 * 64, 8 * 16]
        assert y.shape[0] == features["m1"][0].shape[0]
    assert batches == 3
    assert [models[f"m{i}"].calls for i in range(3)] == [3, 3, 3]
    assert all(all_hooks(model) == 0 for model in models.values())


def test_models_run_in_eval_mode_without_grad_and_their_flags_are_restored():
    model = TinyNet().train()
    model.layer2.eval()  # a mixed state must come back as it was
    seen = []
    model.layer1.register_forward_pre_hook(
        lambda module, args: seen.append((module.training, torch.is_inference_mode_enabled()))
    )
    x = torch.randn(6, 3, 8, 8)
    expected = TinyNet().eval().layer1(TinyNet().eval().conv1(x))
    for features, _ in stream_features({"m": model}, [(x, torch.zeros(6))], ["layer1"]):
        # Dropout is off (eval), so the features are deterministic.
        torch.testing.assert_close(features["m"][0], expected.reshape(6, -1))
        assert not torch.is_inference_mode_enabled()  # inference mode does not leak out
    assert seen == [(False, True)]
    assert model.training and model.layer1.training and not model.layer2.training


class FlattensWithView(TinyNet):
    """Model code that cannot take a channels-last batch: ``.view`` of a 4-D activation."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.fc = nn.Linear(8 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        x = self.layer2(self.layer1(self.conv1(x)))
        return self.fc(x.view(x.shape[0], -1))


LAYERS = ["conv1", "layer1", "layer2"]


def plain_features(model: nn.Module, batches: list) -> list[list[torch.Tensor]]:
    stream = stream_features({"m": model}, batches, LAYERS, flatten=False)
    return [features["m"] for features, _ in stream]


def test_channels_last_batches_give_the_same_features_in_that_layout():
    model = TinyNet()
    batches = list(loader(20, 8))
    expected = plain_features(model, batches)
    stream = stream_features({"m": model}, batches, LAYERS, flatten=False, channels_last=True)
    for (features, _), wanted in zip(stream, expected):
        for tensor, reference in zip(features["m"], wanted):
            assert tensor.is_contiguous(memory_format=torch.channels_last)
            assert not tensor.is_contiguous()
            torch.testing.assert_close(tensor, reference, rtol=1e-5, atol=1e-6)
    # The model itself is not converted.
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_model_that_refuses_channels_last_gets_the_batches_as_given():
    model = FlattensWithView()
    batches = list(loader(20, 8))
    with pytest.raises(RuntimeError, match="view"):
        model.eval()(batches[0][0].contiguous(memory_format=torch.channels_last))
    model.calls = 0
    expected = plain_features(model, batches)
    model.calls = 0
    stream = stream_features({"m": model}, batches, LAYERS, flatten=False, channels_last=True)
    for (features, _), wanted in zip(stream, expected):
        for tensor, reference in zip(features["m"], wanted):
            assert tensor.is_contiguous()
            assert torch.equal(tensor, reference)
    # One refused attempt on the first batch, then one forward per batch.
    assert model.calls == len(batches) + 1
    assert all_hooks(model) == 0


def test_a_reduction_runs_inside_the_forward_and_its_results_are_yielded():
    model = TinyNet()
    batches = list(loader(20, 8))
    expected = plain_features(model, batches)
    seen = []

    def norms(output: torch.Tensor) -> torch.Tensor:
        seen.append((torch.is_inference_mode_enabled(), output.requires_grad))
        return output.flatten(1).norm(dim=1)

    stream = stream_features({"m": model}, batches, LAYERS, reduce=norms, channels_last=True)
    for (features, _), wanted in zip(stream, expected):
        for tensor, reference in zip(features["m"], wanted):
            torch.testing.assert_close(tensor, reference.flatten(1).norm(dim=1))
    assert seen == [(True, False)] * (len(LAYERS) * len(batches))


def test_capture_features_concatenates_batches_and_defaults_to_the_paper_layers():
    model = TinyNet()
    features = capture_features(model, loader(20, 8), ["conv1", "layer2"])
    with FeatureExtractor(model.eval(), ["conv1", "layer2"]) as extractor:
        whole = extractor(torch.cat([x for x, _ in loader(20, 8)]))
    for layer in ("conv1", "layer2"):
        torch.testing.assert_close(features[layer], whole[layer])


def test_default_layers_are_the_module_maps_stage_outputs_and_the_classifier_input():
    resnet_like = TinyNet()
    resnet_like.layer3 = nn.Sequential(nn.ReLU())
    resnet_like.layer4 = nn.Sequential(nn.ReLU())
    expected = ["conv1", "layer1", "layer2", "layer3", "layer4", "fc:in"]
    assert default_layers(resnet_like) == expected
    assert default_layers(TinyNet()) == ["conv1", "layer1", "layer2", "fc:in"]
