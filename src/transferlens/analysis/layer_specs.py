"""What a layer name means: which tensor of a forward pass it picks, and how it is reduced.

Layer names (for CKA and :mod:`~transferlens.analysis.features`):

* ``name`` -- the output of the module ``name`` (a name of ``model.named_modules()``);
* ``name:in`` -- its first positional input, read by a forward pre-hook (before the
  module runs, so a module that works in place does not change what is read): a
  classifier's input is the pooled features even when the pooling is a function call;
* ``name:out.<key>`` -- one part of an output that is not one tensor: a key of a dict
  or a Hugging Face ``ModelOutput``, or an integer index of a tuple or list. Keys
  chain: ``vit.encoder:out.hidden_states.3``.

An output that is a tuple or list, named without a key, contributes its element 0
(the hidden state, for modules returning ``(hidden, extras...)``). A dict or
``ModelOutput`` without a key is refused, listing its keys: there is no first one to
assume.

Per example, the picked tensor ``[N, ...]`` is then read as follows (what
:func:`describe_reduction` names for the ``cka_layers`` table):

* ``[N, D]``: as is;
* ``[N, T, D]`` (tokens): by the ``tokens`` setting -- ``all`` flattens it to ``T*D``
  values (the default), ``cls`` keeps token 0, ``mean`` the mean over the ``T``
  tokens. ``cls`` is refused for a model whose module map says it has no prefix
  token. Token 0 is the class token only once the model has prepended it (a patch
  embedding's own output starts with the first patch), and before the first block it
  is the same for every image: CKA is then undefined (NaN), not 1;
* four or more dimensions (``[N, C, H, W]`` maps, or ``[N, H, W, C]``): flattened.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import pandas as pd
import torch
from torch import nn

from transferlens.errors import UserInputError

if TYPE_CHECKING:
    from transferlens.models.module_map import ModuleMap

Tokens = Literal["all", "cls", "mean"]
TOKENS: tuple[str, ...] = get_args(Tokens)
INPUT, OUTPUT = "in", "out"
SYNTAX = "'name', 'name:in' or 'name:out.<key>'"
_NAMES_SHOWN = 25


@dataclass(frozen=True)
class LayerSpec:
    """A parsed layer name: ``module``, the ``side`` read (``"in"`` or ``"out"``) and
    ``key``, the path into a structured output (empty: the output itself)."""

    name: str
    module: str
    side: Literal["in", "out"]
    key: tuple[str, ...] = ()


def parse_layer(layer: str) -> LayerSpec:
    """``"fc:in"`` -> ``LayerSpec("fc:in", "fc", "in")``; see the module docstring."""
    if not isinstance(layer, str) or not layer:
        raise UserInputError(f"a layer must be a non-empty name (got {layer!r})")
    module, colon, suffix = layer.partition(":")
    if not colon:
        return LayerSpec(layer, module, OUTPUT)
    if module and suffix == INPUT:
        return LayerSpec(layer, module, INPUT)
    side, dot, path = suffix.partition(".")
    key = tuple(path.split(".")) if dot else ()
    if module and side == OUTPUT and (not dot or all(key)):
        return LayerSpec(layer, module, OUTPUT, key)
    raise UserInputError(f"layer {layer!r} is not a layer name; write {SYNTAX}")


def describe_names(names: Sequence[str]) -> str:
    """The first names of a long list, and how many more there are."""
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = len(names) - _NAMES_SHOWN
    return shown + (f", ... ({more} more)" if more > 0 else "")


def check_layers(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """The layer names as a list, after checking each names a module of ``model`` in
    the syntax of the module docstring, and none twice (UserInputError otherwise)."""
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise UserInputError(f"layers must be a non-empty list of module names (got {layers!r})")
    valid = [name for name, _ in model.named_modules() if name]
    known = set(valid)
    for layer in layers:
        spec = parse_layer(layer)
        if spec.module not in known:
            close = difflib.get_close_matches(spec.module, valid, n=1)
            suffix = layer[len(spec.module) :]
            hint = f"did you mean {close[0] + suffix!r}? " if close else ""
            raise UserInputError(
                f"unknown layer {layer!r} in {type(model).__name__}; {hint}"
                f"valid layers: {describe_names(valid)}"
            )
    duplicates = sorted({layer for layer in layers if list(layers).count(layer) > 1})
    if duplicates:
        raise UserInputError(f"layers are listed twice: {', '.join(duplicates)}")
    return list(layers)


def check_tokens(tokens: str, module_map: ModuleMap | None = None) -> str:
    """``tokens`` if it is one of :data:`TOKENS` (and ``cls`` has a token 0 to take:
    refused when ``module_map.prefix_tokens == 0``)."""
    if tokens not in TOKENS:
        raise UserInputError(f"tokens must be one of {', '.join(TOKENS)} (got {tokens!r})")
    if tokens == "cls" and module_map is not None and module_map.prefix_tokens == 0:
        raise UserInputError(
            "tokens: cls needs a class token, and the module map of this model says it "
            "has none (prefix_tokens 0); use tokens: mean or all"
        )
    return tokens


def first_input(spec: LayerSpec, args: tuple, kwargs: Mapping[str, Any]) -> torch.Tensor:
    """The first positional input of a call (what ``name:in`` reads)."""
    if not args:
        given = f" (it got keyword arguments only: {', '.join(kwargs)})" if kwargs else ""
        raise UserInputError(
            f"layer {spec.name!r}: {spec.module!r} was called without a positional input"
            f"{given}; compare its output instead"
        )
    value = args[0]
    if not isinstance(value, torch.Tensor):
        raise UserInputError(
            f"layer {spec.name!r}: the first input of {spec.module!r} is a "
            f"{type(value).__name__}, not a tensor"
        )
    return value


def select_output(spec: LayerSpec, output: Any) -> torch.Tensor:
    """The tensor ``spec`` picks from a module's output (module docstring's rules)."""
    value = output
    for part in spec.key:
        value = _pick(spec, value, part)
    if isinstance(value, Mapping):
        keys = [str(key) for key in value]
        example = f"{spec.name}.{keys[0]}" if spec.key else f"{spec.module}:out.{keys[0]}"
        raise UserInputError(
            f"layer {spec.name!r} gives a {type(value).__name__} with keys "
            f"{', '.join(keys)}; pick one by name, e.g. {example!r}"
        )
    if isinstance(value, tuple | list) and value:
        value = value[0]  # (hidden, extras...): the hidden state
    if not isinstance(value, torch.Tensor):
        raise UserInputError(
            f"layer {spec.name!r} gives a {type(value).__name__}, not a tensor; "
            f"pick a tensor with {spec.module}:out.<key>"
        )
    return value


def _pick(spec: LayerSpec, value: Any, part: str) -> Any:
    """``value[part]``: a key of a mapping, an integer index of a tuple or list."""
    if isinstance(value, Mapping):
        if part in value:
            return value[part]
        keys = ", ".join(str(key) for key in value)
        raise UserInputError(f"layer {spec.name!r}: no key {part!r} in the output (keys: {keys})")
    if isinstance(value, tuple | list):
        size = len(value)
        if part.lstrip("-").isdigit() and -size <= int(part) < size:
            return value[int(part)]
        raise UserInputError(
            f"layer {spec.name!r}: {part!r} is not an index of the output, a "
            f"{type(value).__name__} of {size} (0..{size - 1})"
        )
    raise UserInputError(
        f"layer {spec.name!r}: the output is a {type(value).__name__}, which has no key "
        f"{part!r}; name the layer {spec.module!r}"
    )


def reduce_tokens(features: torch.Tensor, tokens: str) -> torch.Tensor:
    """A ``[N, T, D]`` tensor by ``tokens`` (module docstring); any other shape as it is.

    ``cls`` copies token 0 out, so that what is kept does not hold the other tokens'
    memory alive.
    """
    if features.ndim != 3 or tokens == "all":
        return features
    if tokens == "cls":
        return features[:, 0].contiguous()
    if tokens == "mean":
        return features.mean(dim=1)
    raise UserInputError(f"tokens must be one of {', '.join(TOKENS)} (got {tokens!r})")


def resolve_layers(
    model: nn.Module,
    layers: Sequence[str] | None,
    module_map: ModuleMap | None,
    tokens: str,
) -> list[str]:
    """``layers`` checked against ``model`` (None: the map's ``cka_layers``: each
    stage's output and the classifier's input), after checking that ``tokens`` fits
    the model (``cls`` needs a class token).

    ``module_map`` None: the model's own (:func:`~transferlens.models.module_map.module_map`),
    derived only when needed (default layers, or ``tokens="cls"``).
    """
    from transferlens.models.module_map import module_map as derive_map

    if module_map is None and layers is None:
        module_map = derive_map(model)
    elif module_map is None and tokens == "cls":
        # Only to refuse cls for a model without a class token: a model no rule maps
        # can still be compared at layers given by name.
        with contextlib.suppress(UserInputError):
            module_map = derive_map(model)
    check_tokens(tokens, module_map)
    return check_layers(model, module_map.cka_layers if layers is None else layers)


def describe_reduction(shape: Sequence[int], tokens: str) -> tuple[str, str, int]:
    """``(shape, reduction, features)`` for a per-example shape: ``"65x64"``,
    ``"tokens=all"``, 4160 (the ``cka_layers`` table's columns)."""
    shape = tuple(int(size) for size in shape)
    text = "x".join(str(size) for size in shape) or "1"
    if len(shape) <= 1:
        return text, "as is", math.prod(shape)
    if len(shape) == 2:
        kept = math.prod(shape) if tokens == "all" else shape[1]
        return text, f"tokens={tokens}", kept
    return text, "flatten", math.prod(shape)


def layers_frame(
    layers: Sequence[str],
    shapes: Sequence[Sequence[int]],
    tokens: str,
    module_map: ModuleMap,
) -> pd.DataFrame:
    """The ``cka_layers`` table: ``layer, stage, depth, shape, reduction, features``,
    one row per layer (its unit's stage and depth from ``module_map``; empty for a
    layer in no unit, such as a parameter-free module outside every unit)."""
    rows = []
    for layer, shape in zip(layers, shapes, strict=True):
        try:
            unit = module_map.unit_of_layer(layer)
            place = (unit.stage, unit.depth)
        except UserInputError:
            place = (None, None)
        rows.append((layer, *place, *describe_reduction(shape, tokens)))
    columns = ["layer", "stage", "depth", "shape", "reduction", "features"]
    return pd.DataFrame(rows, columns=columns)
