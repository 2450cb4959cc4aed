"""Any timm model as ``timm:<name>`` (timm is an optional dependency).

``pretrained`` is passed to timm (which downloads weights when True);
``in_channels`` maps onto timm's ``in_chans``; every other keyword goes to
``timm.create_model`` unchanged, and one it rejects becomes a UserInputError.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from transferlens.errors import UserInputError
from transferlens.models.registry import register_model_family


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise UserInputError(
            "timm models need the timm package: pip install 'transferlens[timm]'"
        ) from None
    return timm


@register_model_family("timm")
def build_timm_model(
    model_name: str, num_classes: int, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """``timm.create_model(model_name, pretrained=..., num_classes=..., **kwargs)``."""
    timm = _import_timm()
    if not timm.is_model(model_name):
        raise UserInputError(
            f"unknown timm model {model_name!r} (see timm.list_models() for the names)"
        )
    if not isinstance(pretrained, bool):
        raise UserInputError(f"model 'timm:{model_name}': pretrained must be true or false")
    if "in_channels" in kwargs:
        kwargs["in_chans"] = kwargs.pop("in_channels")
    try:
        return timm.create_model(
            model_name, pretrained=pretrained, num_classes=num_classes, **kwargs
        )
    except TypeError as error:
        # timm forwards unknown keywords to the model class, which raises TypeError.
        raise UserInputError(f"model 'timm:{model_name}': {error}") from None
