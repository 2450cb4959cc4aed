"""State-dict helpers shared by the weight-space analyses (distance, interpolation, criticality).

A network is compared in weight space through its ``state_dict``: parameters plus
buffers, keyed by dotted names. A "module" is a name prefix (``layer1.0``): the
entries under it are the keys equal to the prefix or starting with ``prefix.``.
A **unit** (:mod:`transferlens.models.module_map`) is a name with one or more such
prefixes (a ViT's stem: ``cls_token``, ``pos_embed``, ``patch_embed``); the analyses
take units as a list of names (each its own prefix), a mapping ``{unit: [prefixes]}``
or a ``ModuleMap`` (:data:`UnitsLike`, normalised by :func:`as_units`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Union

import torch
from torch import nn

from transferlens.errors import UserInputError

if TYPE_CHECKING:
    from transferlens.models.module_map import ModuleMap

StateLike = nn.Module | Mapping[str, torch.Tensor]
# Units as the analyses take them: names (each its own prefix), {unit: prefixes}, a map.
UnitsLike = Union[Sequence[str], Mapping[str, Sequence[str]], "ModuleMap"]


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


def under_any(key: str, prefixes: Iterable[str]) -> bool:
    """Is ``key`` under one of ``prefixes`` (the members of a unit)."""
    return any(under(key, prefix) for prefix in prefixes)


def keys_under(keys: Iterable[str], prefix: str | Iterable[str]) -> list[str]:
    """The keys under ``prefix``: one module name, or the members of a unit."""
    prefixes = (prefix,) if isinstance(prefix, str) else tuple(prefix)
    return [key for key in keys if under_any(key, prefixes)]


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


def default_modules(model: StateLike) -> dict[str, tuple[str, ...]]:
    """The units to report one by one: ``{unit name: its state-dict prefixes}``.

    For a module, the units of its :func:`~transferlens.models.module_map.module_map`
    (ResNets: ``conv1``, every block ``layerX.Y``, the head -- the paper's 18 modules of
    ResNet-50; a ViT: its stem, each block, its head). A module the map cannot be
    derived for (no classifier head to find) falls back to its top-level children that
    own parameters, in model order, each its own unit. For a bare state dict, the first
    component of each key, in order.
    """
    if isinstance(model, nn.Module):
        derived = default_map(model)
        if derived is not None:
            return derived.members()
        # Distance and rewinding need no head: keep the plain top-level partition.
        names = [
            name for name, child in model.named_children() if any(True for _ in child.parameters())
        ]
        names += [name for name, _ in model.named_parameters(recurse=False)]
        return {name: (name,) for name in names}
    seen: dict[str, None] = {}
    for key in as_state_dict(model):
        seen.setdefault(key.split(".", 1)[0], None)
    return {name: (name,) for name in seen}


def default_map(model: StateLike) -> ModuleMap | None:
    """The module map of an ``nn.Module`` (:func:`~transferlens.models.module_map.module_map`),
    or None for a bare state dict or a module no rule can map (no classifier head found)."""
    if not isinstance(model, nn.Module):
        return None
    from transferlens.models.module_map import module_map

    try:
        return module_map(model)
    except UserInputError:
        return None


def as_units(modules: UnitsLike) -> dict[str, tuple[str, ...]]:
    """``{unit name: its state-dict prefixes}`` from any way of naming units.

    A list of names: each name is a unit and its own prefix (a name listed twice is
    UserInputError). A mapping ``{unit: [prefixes]}``. A
    :class:`~transferlens.models.module_map.ModuleMap`: its units' members.
    """
    if is_module_map(modules):
        return dict(modules.members())
    if isinstance(modules, Mapping):
        units = {}
        for unit, prefixes in modules.items():
            if isinstance(prefixes, str):
                prefixes = (prefixes,)
            if not isinstance(unit, str) or not prefixes:
                raise UserInputError(f"unit {unit!r} must be a name with a list of module names")
            if any(not isinstance(prefix, str) for prefix in prefixes):
                raise UserInputError(f"unit {unit!r}: members must be module names")
            units[unit] = tuple(prefixes)
        return units
    if isinstance(modules, str) or not isinstance(modules, Iterable):
        raise UserInputError(
            f"modules must be a list of module names, a mapping or a module map (got {modules!r})"
        )
    names = list(modules)
    for name in names:
        if not isinstance(name, str):
            raise UserInputError(f"module {name!r} is not a module name")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserInputError(f"modules are listed twice: {', '.join(twice)}")
    return {name: (name,) for name in names}


def check_modules(keys: Iterable[str], modules: UnitsLike) -> dict[str, tuple[str, ...]]:
    """The units of ``modules`` (see :func:`as_units`), checked against the entries ``keys``.

    Each name of a list and each member of a mapping must match an entry (UserInputError
    naming the first that does not); a module map, already checked against its model
    (:func:`~transferlens.models.module_map.check_partition`), needs one matching member
    per unit.
    """
    keys = list(keys)
    units = as_units(modules)
    from_map = is_module_map(modules)
    for unit, members in units.items():
        found = [member for member in members if keys_under(keys, member)]
        if from_map and found:
            continue
        missing = [member for member in members if member not in found]
        if missing:
            where = "" if members == (unit,) else f" (unit {unit!r})"
            raise UserInputError(f"module {missing[0]!r}{where} does not exist in the model")
    return units


def unit_of(module: str, modules: UnitsLike | None = None) -> tuple[str, tuple[str, ...]]:
    """``(unit name, its prefixes)`` for ``module``: a unit of ``modules`` when it names
    one, else the prefix ``module`` alone (any module of the network)."""
    if not isinstance(module, str):
        raise UserInputError(f"module {module!r} is not a module name")
    units = {} if modules is None else as_units(modules)
    return module, units.get(module, (module,))


def stages_of(modules: UnitsLike | None) -> dict[str, tuple[str, ...]] | None:
    """``{stage: its units}`` when ``modules`` is a module map, else None."""
    if not is_module_map(modules):
        return None
    return {stage.name: tuple(stage.units) for stage in modules.stages}


def is_module_map(modules: object) -> bool:
    from transferlens.models.module_map import ModuleMap

    return isinstance(modules, ModuleMap)
