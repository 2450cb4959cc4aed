"""Fixup ResNets: residual networks trained without any normalisation layer.

Fixup (Zhang, Dauphin & Ma, ICLR 2019) replaces BatchNorm by an initialisation
and a few scalars, which is why the paper can interpolate between networks and
rewind modules without re-estimating statistics. Every residual branch of m
convolutions computes (scalars b*, s; ``relu`` after every conv but the last)::

    out = conv_1(x + b1a); out = relu(out + b1b)
    ...                                           (one a/b pair per conv)
    out = conv_m(out + bma) * scale + bmb
    y   = relu(out + shortcut(x + b1a))

with every bias b* initialised to 0 and ``scale`` to 1. Initialisation, as in
the Fixup reference code used by the paper (third_party/fixup_resnet of
google-research/understanding-transfer-learning):

- conv_1 .. conv_{m-1} of a branch: He normal with **fan_out**
  (std = sqrt(2 / (out_channels * k * k))), multiplied by L^(-1/(2m-2)) with
  L = number of residual blocks: L^(-1/4) for bottlenecks (m = 3), L^(-1/2) for
  basic blocks (m = 2);
- conv_m: zero, so every block starts as the identity (on its shortcut);
- shortcut 1x1 convolutions (where shape changes): He normal, fan_out, unscaled;
- stem convolution and the head: PyTorch's default init (the paper trains with
  ``zero_fc_init=False``, so ``fc`` is *not* zeroed).

Module names follow torchvision (``conv1``, ``layer1``..``layer4`` with blocks
``layerX.Y``, ``fc``). The stem's scalar bias lives inside ``conv1``
(:class:`ScalarBiasConv2d`, ``conv1.output_bias``) and the scalar added to the
pooled features lives inside ``fc`` (:class:`ScalarBiasLinear`,
``fc.input_bias``), so that "module conv1" and "module fc" own every parameter
they use. A reference checkpoint's top-level ``bias1``/``bias2`` map onto these
two names (see :func:`transferlens.models.weights.rename_reference_fixup_keys`).
Every scalar's name contains ``bias`` or ``scale``, the paper's rule for the
parameters trained at lr/10.
"""

from __future__ import annotations

import torch
from torch import nn

from transferlens.errors import UserInputError
from transferlens.models.registry import register_model

STEMS = ("imagenet", "cifar")


class ScalarBiasConv2d(nn.Conv2d):
    """A convolution without per-channel bias, followed by one learned scalar: y = W*x + b."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, bias=False, **kwargs)
        self.output_bias = nn.Parameter(self.weight.new_zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.output_bias


class ScalarBiasLinear(nn.Linear):
    """A linear layer whose input is first shifted by one learned scalar: y = W(x + b0) + b."""

    def __init__(self, in_features: int, out_features: int, **kwargs) -> None:
        super().__init__(in_features, out_features, **kwargs)
        self.input_bias = nn.Parameter(self.weight.new_zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x + self.input_bias)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False
    )


def _scalar(value: float) -> nn.Parameter:
    return nn.Parameter(torch.full((1,), float(value)))


def _he_normal_fan_out_(weight: torch.Tensor, multiplier: float = 1.0) -> None:
    """w ~ N(0, (multiplier * sqrt(2 / fan_out))^2), fan_out = out_channels * k_h * k_w."""
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
    with torch.no_grad():
        weight.mul_(multiplier)


class FixupBasicBlock(nn.Module):
    """Two 3x3 convolutions (m = 2); the first carries the stride."""

    expansion = 1
    convs_per_branch = 2

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bias1a = _scalar(0.0)
        self.conv1 = _conv(in_channels, planes, 3, stride)
        self.bias1b = _scalar(0.0)
        self.bias2a = _scalar(0.0)
        self.conv2 = _conv(planes, planes, 3)
        self.scale = _scalar(1.0)
        self.bias2b = _scalar(0.0)
        self.relu = nn.ReLU(inplace=True)
        out_channels = planes * self.expansion
        changes_shape = stride != 1 or in_channels != out_channels
        self.downsample = _conv(in_channels, out_channels, 1, stride) if changes_shape else None

    def branch_convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x + self.bias1a
        out = self.relu(self.conv1(shifted) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        shortcut = x if self.downsample is None else self.downsample(shifted)
        return self.relu(out + shortcut)


class FixupBottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4 (m = 3)."""

    expansion = 4
    convs_per_branch = 3

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bias1a = _scalar(0.0)
        self.conv1 = _conv(in_channels, planes, 1)
        self.bias1b = _scalar(0.0)
        self.bias2a = _scalar(0.0)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bias2b = _scalar(0.0)
        self.bias3a = _scalar(0.0)
        self.conv3 = _conv(planes, planes * self.expansion, 1)
        self.scale = _scalar(1.0)
        self.bias3b = _scalar(0.0)
        self.relu = nn.ReLU(inplace=True)
        out_channels = planes * self.expansion
        changes_shape = stride != 1 or in_channels != out_channels
        self.downsample = _conv(in_channels, out_channels, 1, stride) if changes_shape else None

    def branch_convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2, self.conv3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x + self.bias1a
        out = self.relu(self.conv1(shifted) + self.bias1b)
        out = self.relu(self.conv2(out + self.bias2a) + self.bias2b)
        out = self.conv3(out + self.bias3a) * self.scale + self.bias3b
        shortcut = x if self.downsample is None else self.downsample(shifted)
        return self.relu(out + shortcut)


Block = type[FixupBasicBlock] | type[FixupBottleneck]


class FixupResNet(nn.Module):
    """A four-stage Fixup ResNet (stage widths w, 2w, 4w, 8w; strides 1, 2, 2, 2).

    ``stem="imagenet"``: 7x7 conv stride 2 + scalar bias + ReLU + 3x3 max-pool stride 2
    (224 px inputs). ``stem="cifar"``: 3x3 conv stride 1 + scalar bias + ReLU, no
    pooling (32-64 px inputs); ``maxpool`` is then an ``nn.Identity``.
    """

    def __init__(
        self,
        block: Block,
        blocks_per_stage: list[int],
        num_classes: int,
        stem: str = "imagenet",
        width: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise UserInputError(f"stem must be one of {STEMS} (got {stem!r})")
        if stem == "imagenet":
            self.conv1 = ScalarBiasConv2d(in_channels, width, 7, stride=2, padding=3)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = ScalarBiasConv2d(in_channels, width, 3, stride=1, padding=1)
            self.maxpool = nn.Identity()
        # Not in place: a forward hook on ``conv1`` (CKA) must see the pre-ReLU feature map.
        self.relu = nn.ReLU()
        self.num_residual_blocks = sum(blocks_per_stage)
        channels = width
        stages = []
        for index, count in enumerate(blocks_per_stage):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            stage = [block(channels, planes, stride)]
            channels = planes * block.expansion
            stage += [block(channels, planes) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = ScalarBiasLinear(channels, num_classes)
        self._fixup_init()

    def _fixup_init(self) -> None:
        depth = self.num_residual_blocks
        for module in self.modules():
            if not isinstance(module, FixupBasicBlock | FixupBottleneck):
                continue
            *scaled, last = module.branch_convs()
            multiplier = depth ** (-1.0 / (2 * module.convs_per_branch - 2))
            for conv in scaled:
                _he_normal_fan_out_(conv.weight, multiplier)
            nn.init.zeros_(last.weight)
            if module.downsample is not None:
                _he_normal_fan_out_(module.downsample.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _positive_int(model: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"model {model!r}: {key} must be a positive integer (got {value!r})")
    return value


def _build(
    model: str,
    block: Block,
    blocks_per_stage: list[int],
    num_classes: int,
    stem: str,
    width: int | None,
    in_channels: int,
) -> FixupResNet:
    if stem not in STEMS:
        raise UserInputError(f"model {model!r}: stem must be one of {STEMS} (got {stem!r})")
    if width is None:
        width = 64 if stem == "imagenet" else 16
    width = _positive_int(model, "width", width)
    in_channels = _positive_int(model, "in_channels", in_channels)
    return FixupResNet(block, blocks_per_stage, num_classes, stem, width, in_channels)


@register_model("fixup_resnet50")
def fixup_resnet50(
    num_classes: int, stem: str = "imagenet", width: int | None = None, in_channels: int = 3
) -> FixupResNet:
    """The paper's network: bottlenecks [3, 4, 6, 3] (L = 16), ~25.5M parameters at 1000 classes."""
    return _build(
        "fixup_resnet50", FixupBottleneck, [3, 4, 6, 3], num_classes, stem, width, in_channels
    )


@register_model("fixup_resnet18")
def fixup_resnet18(
    num_classes: int, stem: str = "imagenet", width: int | None = None, in_channels: int = 3
) -> FixupResNet:
    """Basic blocks [2, 2, 2, 2] (L = 8)."""
    return _build(
        "fixup_resnet18", FixupBasicBlock, [2, 2, 2, 2], num_classes, stem, width, in_channels
    )


@register_model("fixup_resnet20")
def fixup_resnet20(
    num_classes: int, stem: str = "imagenet", width: int | None = None, in_channels: int = 3
) -> FixupResNet:
    """Basic blocks [2, 2, 3, 2] (L = 9): 2 * 9 + 2 = 20 weight layers in four stages.

    The CIFAR ResNet-20 has three stages of 3 blocks; we keep the project's four
    stages (``layer1``..``layer4``) and put the extra block in the third stage, as
    ResNet-50 weights its third stage most.
    """
    return _build(
        "fixup_resnet20", FixupBasicBlock, [2, 2, 3, 2], num_classes, stem, width, in_channels
    )


@register_model("fixup_resnet10")
def fixup_resnet10(
    num_classes: int, stem: str = "imagenet", width: int | None = None, in_channels: int = 3
) -> FixupResNet:
    """Basic blocks [1, 1, 1, 1] (L = 4): the smallest four-stage network, for CPUs."""
    return _build(
        "fixup_resnet10", FixupBasicBlock, [1, 1, 1, 1], num_classes, stem, width, in_channels
    )
