"""State-dict helpers shared by the weight-space analyses (distance, interpolation, criticality).

A network is compared in weight space through its ``state_dict``: parameters plus
buffers, keyed by dotted names. A "module" is a name prefix (``layer1.0``): the
entries under it are the keys equal to the prefix or starting with ``prefix.``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from transferlens.errors import UserInputError

StateLike = nn.Module | Mapping[str, torch.Tensor]


def as_state_dict(model: StateLike, what: str = "model") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a module, or a mapping of tensors checked and copied as a dict."""
    if isinstance(model, nn.Module):
        return dict(model.state_dict())
    if isinstance(model, Mapping):
        for key, value in model.items():
            if not isinstance(value, torch.Tensor):
                raise UserInputError(f"{what}: entry {key!r} is not a tensor")
        return dict(model)
    raise UserInputError(
        f"{what}: expected an nn.Module or a state dict, got {type(model).__name__}"
    )


def parameter_names(model: StateLike) -> set[str] | None:
    """Names of the learnable parameters of a module; ``None`` for a bare state dict.

    A state dict does not say which entries are parameters, so callers treat every
    floating entry of a bare state dict as a parameter.
    """
    if isinstance(model, nn.Module):
        return {name for name, _ in model.named_parameters()}
    return None


def under(key: str, prefix: str) -> bool:
    """Is ``key`` the entry ``prefix`` itself or inside the module ``prefix``."""
    return key == prefix or key.startswith(prefix + ".")


def keys_under(keys: Iterable[str], prefix: str) -> list[str]:
    return [key for key in keys if under(key, prefix)]


def is_floating(tensor: torch.Tensor) -> bool:
    return tensor.is_floating_point() or tensor.is_complex()


def check_same_layout(
    a: Mapping[str, torch.Tensor],
    b: Mapping[str, torch.Tensor],
    *,
    ignore_prefixes: Iterable[str] = (),
) -> None:
    """Raise UserInputError unless ``a`` and ``b`` have the same keys and shapes.

    Entries under ``ignore_prefixes`` (an excluded head) are not compared.
    """
    ignored = tuple(ignore_prefixes)

    def kept(keys: Iterable[str]) -> set[str]:
        return {key for key in keys if not any(under(key, prefix) for prefix in ignored)}

    only_a = sorted(kept(a) - kept(b))
    only_b = sorted(kept(b) - kept(a))
    if only_a or only_b:
        key = (only_a or only_b)[0]
        side = "first" if only_a else "second"
        raise UserInputError(
            f"the two models differ in architecture: {key!r} exists only in the {side} one"
        )
    for key in sorted(kept(a)):
        if a[key].shape != b[key].shape:
            raise UserInputError(
                f"the two models differ in architecture: {key!r} has shape "
                f"{tuple(a[key].shape)} vs {tuple(b[key].shape)}"
            )


def default_modules(model: StateLike) -> list[str]:
    """The modules to report one by one.

    For ResNet-style networks, :func:`transferlens.models.criticality_modules`
    (``conv1``, every block ``layerX.Y``, the head: the paper's 18 modules of
    ResNet-50). For any other module, its top-level children that own parameters,
    in model order; for a bare state dict, the first component of each key, in order.
    """
    if isinstance(model, nn.Module):
        from transferlens.models import criticality_modules, has_resnet_layout

        if has_resnet_layout(model) and not any(True for _ in model.parameters(recurse=False)):
            return criticality_modules(model)
        names = [
            name for name, child in model.named_children() if any(True for _ in child.parameters())
        ]
        names += [name for name, _ in model.named_parameters(recurse=False)]
        return names
    seen: dict[str, None] = {}
    for key in as_state_dict(model):
        seen.setdefault(key.split(".", 1)[0], None)
    return list(seen)


def check_modules(keys: Iterable[str], modules: Iterable[str]) -> list[str]:
    """Return ``modules`` as a list; raise UserInputError for a name that matches no entry."""
    keys = list(keys)
    checked = []
    for module in modules:
        if not isinstance(module, str) or not keys_under(keys, module):
            raise UserInputError(f"module {module!r} does not exist in the model")
        checked.append(module)
    return checked
