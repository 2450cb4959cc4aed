"""Analysis 4: l2 distance between two networks in parameter space.

For two networks of the same architecture with parameters a and b::

    l2(all)   = || vec(a) - vec(b) ||_2            over every compared parameter
    l2(unit)  = || vec(a_u) - vec(b_u) ||_2        over the parameters under the unit's members
    l2(stage) = sqrt( sum over its units of l2(unit)^2 )

accumulated in float64. Units are those of the model's module map
(:mod:`transferlens.models.module_map`) unless given; stages are reported when the
units come from a map. The paper's Table 2 compares P-T with P, whose heads differ
in shape (the target's classes vs the source's): such a head cannot be compared, so
it is left out of ``all`` and its unit reports NaN (so does its stage); the names
left out are listed in :attr:`DistanceResult.excluded`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from transferlens.analysis.statedict import (
    StateLike,
    UnitsLike,
    as_state_dict,
    as_units,
    check_modules,
    check_same_layout,
    default_map,
    default_modules,
    is_floating,
    is_module_map,
    keys_under,
    parameter_names,
    stages_of,
    under,
)
from transferlens.errors import UserInputError

ALL = "all"


@dataclass(frozen=True)
class DistanceResult:
    """l2 distances: ``total`` over every compared parameter, ``per_module`` one per unit
    (NaN if excluded) and ``per_stage`` (None unless the units came from a module map).

    ``excluded``: the modules left out (a head of another shape); ``settings``:
    ``modules``, ``exclude_head`` and ``include_buffers`` as asked.
    """

    total: float
    per_module: dict[str, float]
    excluded: tuple[str, ...]
    settings: dict[str, Any]
    per_stage: dict[str, float] | None = None

    def to_frame(self) -> pd.DataFrame:
        """Columns ``module, l2``: the row ``all`` (``total``), then one row per unit."""
        rows = [(ALL, self.total), *self.per_module.items()]
        return pd.DataFrame(rows, columns=["module", "l2"])

    def stages_frame(self) -> pd.DataFrame:
        """Columns ``stage, l2``, one row per stage (none when no map was known)."""
        return pd.DataFrame(list((self.per_stage or {}).items()), columns=["stage", "l2"])


def stage_distances(
    per_unit: dict[str, float], stages: dict[str, tuple[str, ...]]
) -> dict[str, float]:
    """``l2(stage) = sqrt(sum over its units of l2(unit)^2)``: NaN when any unit is NaN
    (left out), as the stage's distance would then be partial."""
    return {
        stage: math.sqrt(sum(per_unit[unit] ** 2 for unit in units))
        if not any(math.isnan(per_unit[unit]) for unit in units)
        else float("nan")
        for stage, units in stages.items()
    }


def _differing_keys(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    only_one = set(a) ^ set(b)
    reshaped = {key for key in set(a) & set(b) if a[key].shape != b[key].shape}
    return sorted(only_one | reshaped)


def _head_of(a: StateLike, b: StateLike, differing: list[str]) -> str:
    """The head's prefix: from the model (``models.head_prefix``) or the differing keys."""
    model = a if isinstance(a, nn.Module) else b if isinstance(b, nn.Module) else None
    if model is not None:
        from transferlens.models import head_prefix

        return head_prefix(model)
    if not differing:
        raise UserInputError("exclude_head=True needs an nn.Module (or the head's name) to find it")
    # Bare state dicts: the module owning the first differing entry (e.g. "fc" for "fc.weight").
    return differing[0].rsplit(".", 1)[0] if "." in differing[0] else differing[0]


def _resolve_excluded(
    a: StateLike,
    b: StateLike,
    state_a: dict[str, torch.Tensor],
    state_b: dict[str, torch.Tensor],
    exclude_head: bool | str,
) -> list[str]:
    differing = _differing_keys(state_a, state_b)
    if exclude_head is False:
        return []
    if isinstance(exclude_head, str) and exclude_head != "auto":
        return [exclude_head]
    if exclude_head == "auto":
        if not differing:
            return []
        head = _head_of(a, b, differing)
        outside = [key for key in differing if not under(key, head)]
        if outside:
            return []  # not a head-only difference: check_same_layout names the culprit
        return [head]
    if exclude_head is True:
        return [_head_of(a, b, differing)]
    raise UserInputError(
        f"exclude_head must be 'auto', True, False or a module name (got {exclude_head!r})"
    )


def parameter_distance(
    a: StateLike,
    b: StateLike,
    *,
    modules: UnitsLike | None = None,
    exclude_head: bool | str = "auto",
    include_buffers: bool = False,
) -> DistanceResult:
    """l2 distance between ``a`` and ``b`` (modules or state dicts of one architecture).

    ``total``: over the whole compared parameter vector (the row ``all`` of
    :meth:`DistanceResult.to_frame`); ``per_module``: one entry per unit of ``modules``
    (a list of module names, ``{unit: [prefixes]}`` or a ``ModuleMap``) -- by default
    :func:`~transferlens.analysis.statedict.default_modules`, the units of the model's
    module map (``conv1``, each residual block, the head for ResNets); ``per_stage``,
    when the units are a map's (given, or the default of an ``nn.Module``).
    ``exclude_head``: ``"auto"`` leaves the head out
    when the two heads differ in shape (P vs P-T), ``True`` always, ``False`` never,
    or a module name to leave out. Left-out modules are listed in ``excluded``; a unit
    that holds one (or lies inside one) has distance NaN. Only parameters are
    compared unless ``include_buffers`` (floating buffers such as BatchNorm statistics;
    integer buffers never). A bare state dict does not tell parameters from buffers,
    so when neither input is an ``nn.Module`` every floating entry counts.
    """
    state_a, state_b = as_state_dict(a, "first model"), as_state_dict(b, "second model")
    excluded = _resolve_excluded(a, b, state_a, state_b, exclude_head)
    check_same_layout(state_a, state_b, ignore_prefixes=excluded)

    names = parameter_names(a) if isinstance(a, nn.Module) else parameter_names(b)
    compared = [
        key
        for key in state_a
        if not any(under(key, prefix) for prefix in excluded)
        and is_floating(state_a[key])
        and (include_buffers or names is None or key in names)
    ]
    squared = {
        key: float(
            ((state_a[key].double() - state_b[key].double().to(state_a[key].device)) ** 2).sum()
        )
        for key in compared
    }

    settings = {
        "modules": None if modules is None else _as_setting(modules),
        "exclude_head": exclude_head,
        "include_buffers": include_buffers,
    }
    if modules is None:
        model = a if isinstance(a, nn.Module) else b
        modules = default_map(model) or default_modules(model)
    units = check_modules(state_a, modules)
    per_module = {}
    for unit, members in units.items():
        if _overlaps(members, excluded):
            per_module[unit] = float("nan")
        else:
            per_module[unit] = math.sqrt(sum(squared[key] for key in keys_under(squared, members)))
    total = math.sqrt(sum(squared.values()))
    stages = stages_of(modules)
    per_stage = None if stages is None else stage_distances(per_module, stages)
    return DistanceResult(total, per_module, tuple(excluded), settings, per_stage)


def _overlaps(members: tuple[str, ...], excluded: list[str]) -> bool:
    """Does a unit hold a left-out module (ConvNeXt's ``head`` holds ``head.fc``) or lie
    inside one? Its distance would be partial: NaN says it is not comparable."""
    return any(
        under(prefix, member) or under(member, prefix) for prefix in excluded for member in members
    )


def _as_setting(modules: UnitsLike) -> Any:
    """``modules`` as the settings record it: a list of names, or ``{unit: [members]}``."""
    units = as_units(modules)
    if is_module_map(modules) or any(members != (unit,) for unit, members in units.items()):
        return {unit: list(members) for unit, members in units.items()}
    return list(units)
