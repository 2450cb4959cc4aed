"""torchvision's BatchNorm ResNets, so that anyone's ImageNet weights can be studied.

``weights`` is passed to torchvision (e.g. ``"IMAGENET1K_V1"``, ``"DEFAULT"``),
which downloads the pre-trained weights on first use. With weights the
ImageNet head is kept when ``num_classes == 1000`` (that network *is* P) and
replaced by a fresh default-initialised ``nn.Linear`` otherwise; without
weights torchvision builds the head with ``num_classes`` outputs directly.
Module names are torchvision's own, so its state dicts load unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision.models as tv_models
from torch import nn

from transferlens.errors import UserInputError
from transferlens.models.registry import register_model

IMAGENET_CLASSES = 1000


def _resolve_weights(model: str, weights: str | None) -> tv_models.WeightsEnum | None:
    if weights is None:
        return None
    enum = tv_models.get_model_weights(model)
    if not isinstance(weights, str):
        raise UserInputError(f"model {model!r}: weights must be a string (got {weights!r})")
    if weights == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[weights]
    except KeyError:
        known = ", ".join(["DEFAULT", *(member.name for member in enum)])
        raise UserInputError(
            f"model {model!r}: unknown weights {weights!r} (known: {known})"
        ) from None


def _build(
    model: str, constructor: Callable[..., nn.Module], num_classes: int, weights: str | None
) -> nn.Module:
    resolved = _resolve_weights(model, weights)
    if resolved is None:
        return constructor(weights=None, num_classes=num_classes)
    network = constructor(weights=resolved)
    if num_classes != IMAGENET_CLASSES:
        network.fc = nn.Linear(network.fc.in_features, num_classes)
    return network


@register_model("resnet18")
def resnet18(num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision ResNet-18 (BatchNorm), ``weights`` as torchvision names them."""
    return _build("resnet18", tv_models.resnet18, num_classes, weights)


@register_model("resnet34")
def resnet34(num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision ResNet-34 (BatchNorm), ``weights`` as torchvision names them."""
    return _build("resnet34", tv_models.resnet34, num_classes, weights)


@register_model("resnet50")
def resnet50(num_classes: int, weights: str | None = None) -> nn.Module:
    """torchvision ResNet-50 (BatchNorm), ``weights`` as torchvision names them."""
    return _build("resnet50", tv_models.resnet50, num_classes, weights)
