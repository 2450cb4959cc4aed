"""The module map: every parameter of a network in named units, grouped into stages.

Every analysis that looks inside a network reads it through one
:class:`ModuleMap`, so that "a layer", "a module" and "the lower modules" mean the
same thing for a ResNet, a ViT, a ConvNeXt, a Hugging Face checkpoint or a user's
own class:

* a **unit** owns a set of state-dict prefixes (modules, or single parameters such as
  a ViT's ``cls_token``): it is what distance, rewinding and criticality report one by
  one. The units partition the parameters: each parameter is in exactly one unit.
* a **stage** is a run of consecutive units from input to output (a ResNet's stem,
  ``layer1``..``layer4``, its head); the stage's ``output`` is the layer whose output
  stands for it in CKA.
* the **classifier** is the module that is replaced for P-T and whose input (the
  pooled features) CKA compares as ``<classifier>:in``.
* **depth** of unit ``i`` of ``n``: ``i / (n - 1)`` (0 = the first unit, 1 = the
  last); the **lower units** are those of depth below
  :data:`~transferlens.results.LOWER_DEPTH` (1/3), the rule the report states.

:func:`module_map` derives the map from the model's family (see
:mod:`transferlens.models.module_map_rules`) or from a list the user gives
(:func:`explicit_map`).
"""

from __future__ import annotations

import fnmatch
import weakref
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from transferlens.errors import UserInputError
from transferlens.models.module_map_walk import has_module
from transferlens.results import LOWER_DEPTH, unit_depths

HEAD_STAGE = "head"
# What a user may give as a map: unit names or globs, or stage name -> those.
ModulesSpec = Sequence[str] | Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Unit:
    """One unit: ``members`` are the state-dict prefixes it owns (``"layer1.0"``,
    ``"cls_token"``); ``stage`` the stage it belongs to; ``depth`` in [0, 1]."""

    name: str
    members: tuple[str, ...]
    stage: str
    depth: float


@dataclass(frozen=True)
class Stage:
    """Consecutive units; ``output`` is the layer CKA compares for the stage
    (a module name, optionally ``name:in`` for its input)."""

    name: str
    units: tuple[str, ...]
    output: str


@dataclass(frozen=True)
class ModuleMap:
    """An ordered partition of a model's parameters (see the module docstring).

    ``family`` names the rule that derived it (``"resnet"``, ``"timm-vit"``,
    ``"explicit"``, ...); ``prefix_tokens`` is the number of tokens (class, register)
    before the patch tokens in the model's token outputs, or None for a model without
    token outputs: CKA's ``tokens: cls`` takes token 0 and needs at least one.
    """

    units: tuple[Unit, ...]
    stages: tuple[Stage, ...]
    classifier: str
    family: str
    prefix_tokens: int | None = None
    _by_name: dict[str, Unit] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({unit.name: unit for unit in self.units})

    @property
    def unit_names(self) -> list[str]:
        return [unit.name for unit in self.units]

    def unit(self, name: str) -> Unit:
        try:
            return self._by_name[name]
        except KeyError:
            raise UserInputError(
                f"unknown unit {name!r}; units: {', '.join(self.unit_names)}"
            ) from None

    def members(self) -> dict[str, tuple[str, ...]]:
        """``{unit name: its state-dict prefixes}``, in order (what the weight-space
        analyses take as ``modules``)."""
        return {unit.name: unit.members for unit in self.units}

    @property
    def lower_units(self) -> list[str]:
        """The units of depth below :data:`LOWER_DEPTH` (the paper's "lower modules")."""
        return [unit.name for unit in self.units if unit.depth < LOWER_DEPTH]

    @property
    def cka_layers(self) -> list[str]:
        """Each stage's output, then the classifier's input (``<classifier>:in``)."""
        outputs = [stage.output for stage in self.stages if stage.name != HEAD_STAGE]
        return [*outputs, f"{self.classifier}:in"]

    def stage_of(self, unit: str) -> str:
        return self.unit(unit).stage

    def unit_of_layer(self, layer: str) -> Unit:
        """The unit a CKA layer belongs to: ``layer`` (``:in``/``:out...`` suffix dropped)
        is a member of it or inside one, else the last unit inside ``layer`` (a stage
        container such as ``layer1``), else the last unit of the stage it is the output
        of (a ViT's parameter-free ``norm_pre``). UserInputError when none."""
        name = layer.split(":", 1)[0]
        for unit in self.units:
            if any(name == m or name.startswith(m + ".") for m in unit.members):
                return unit
        inside = [u for u in self.units if any(m.startswith(name + ".") for m in u.members)]
        if name and inside:
            return inside[-1]
        for stage in self.stages:
            if name and stage.output.split(":", 1)[0] == name:
                return self.unit(stage.units[-1])
        raise UserInputError(f"layer {layer!r} is in no unit of the module map")

    def to_frame(self) -> pd.DataFrame:
        """Columns ``unit, stage, depth, lower, members`` (``;``-joined), one row per unit."""
        return pd.DataFrame(
            [
                (u.name, u.stage, u.depth, u.depth < LOWER_DEPTH, ";".join(u.members))
                for u in self.units
            ],
            columns=["unit", "stage", "depth", "lower", "members"],
        )


def build_map(
    stages: Sequence[tuple[str, Sequence[tuple[str, Sequence[str]]], str]],
    classifier: str,
    family: str,
    prefix_tokens: int | None = None,
) -> ModuleMap:
    """A :class:`ModuleMap` from ``[(stage, [(unit, members), ...], output), ...]``,
    depths assigned in order (what every rule returns)."""
    flat = [(stage, unit, tuple(members)) for stage, units, _ in stages for unit, members in units]
    units = tuple(
        Unit(name, members, stage, depth)
        for (stage, name, members), depth in zip(flat, unit_depths(len(flat)))
    )
    stage_list = tuple(
        Stage(name, tuple(unit for unit, _ in units_of), output)
        for name, units_of, output in stages
        if units_of
    )
    return ModuleMap(units, stage_list, classifier, family, prefix_tokens)


def check_partition(model: nn.Module, module_map: ModuleMap) -> ModuleMap:
    """Raise UserInputError unless the units own every parameter exactly once.

    The error is one line naming the first parameter that no unit owns, or that two
    units own (and which two).
    """
    owners: dict[str, list[str]] = {name: [] for name, _ in model.named_parameters()}
    for unit in module_map.units:
        for member in unit.members:
            matched = [name for name in owners if name == member or name.startswith(member + ".")]
            if not matched and not has_module(model, member):
                raise UserInputError(
                    f"module map of {type(model).__name__}: unit {unit.name!r} names "
                    f"{member!r}, which is neither a module nor a parameter"
                )
            for name in matched:
                owners[name].append(unit.name)
    missing = [name for name, units in owners.items() if not units]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserInputError(
            f"module map of {type(model).__name__}: parameter {missing[0]!r} is in no unit{more}"
        )
    twice = [(name, units) for name, units in owners.items() if len(units) > 1]
    if twice:
        name, units = twice[0]
        raise UserInputError(
            f"module map of {type(model).__name__}: parameter {name!r} is counted twice "
            f"(units {', '.join(repr(u) for u in units)})"
        )
    return module_map


def _expand(model: nn.Module, pattern: str) -> list[str]:
    """Module or parameter names matching ``pattern`` (an exact name, or a glob whose
    outermost matches are kept: ``layer*`` gives ``layer1``, not ``layer1.0`` too)."""
    if not any(char in pattern for char in "*?["):
        if has_module(model, pattern) or pattern in dict(model.named_parameters()):
            return [pattern]
        return []
    names = [name for name, _ in model.named_modules() if name]
    names += [name for name, _ in model.named_parameters()]
    matched = [name for name in dict.fromkeys(names) if fnmatch.fnmatchcase(name, pattern)]
    return [name for name in matched if not any(name.startswith(other + ".") for other in matched)]


def explicit_map(model: nn.Module, modules: ModulesSpec) -> ModuleMap:
    """The map a user gives: unit names or glob patterns, in order from input to output.

    ``modules`` is a list (each name, and each match of a glob, is one unit; consecutive
    units whose names share their first dotted component form a stage named by it) or a
    mapping ``{stage: [names or globs]}``. The last unit is the head: the classifier is
    that unit if it is a module with a ``weight``, else the last ``nn.Linear`` inside it.
    Every parameter must be in exactly one unit (UserInputError naming the first that
    is not, or that is twice).
    """
    if isinstance(modules, str) or not isinstance(modules, Sequence | Mapping) or not modules:
        raise UserInputError(
            f"modules must be a non-empty list of module names or globs (got {modules!r})"
        )
    grouped = modules.items() if isinstance(modules, Mapping) else [(None, list(modules))]
    stages: list[tuple[str, list[tuple[str, tuple[str, ...]]], str]] = []
    for stage, patterns in grouped:
        if isinstance(patterns, str) or not patterns:
            raise UserInputError(f"modules: stage {stage!r} must list module names or globs")
        for pattern in patterns:
            names = _expand(model, str(pattern))
            if not names:
                raise UserInputError(
                    f"modules: {pattern!r} matches no module or parameter of {type(model).__name__}"
                )
            for name in names:
                stage_name = stage if stage is not None else name.split(".", 1)[0]
                if stages and stages[-1][0] == stage_name:
                    stages[-1][1].append((name, (name,)))
                else:
                    stages.append((stage_name, [(name, (name,))], name))
    # A stage's output is its last unit (a module); a parameter-only unit has no output.
    stages = [(name, units, units[-1][0]) for name, units, _ in stages]
    head_unit = stages[-1][1][-1][0]
    head_stage = (HEAD_STAGE, [stages[-1][1].pop()], head_unit)
    stages = [stage for stage in stages if stage[1]]
    stages = [(name, units, units[-1][0]) for name, units, _ in stages] + [head_stage]
    classifier = classifier_in(model, head_unit)
    return check_partition(model, build_map(stages, classifier, "explicit"))


def classifier_in(model: nn.Module, unit: str) -> str:
    """The classifier inside ``unit``: the unit itself if it has a ``weight``, else its
    last ``nn.Linear`` (UserInputError when there is none)."""
    module = model.get_submodule(unit) if has_module(model, unit) else None
    if module is None:
        raise UserInputError(f"the head {unit!r} of {type(model).__name__} is not a module")
    if isinstance(getattr(module, "weight", None), nn.Parameter):
        return unit
    linears = [name for name, child in module.named_modules() if isinstance(child, nn.Linear)]
    if not linears:
        raise UserInputError(
            f"the head {unit!r} of {type(model).__name__} holds no nn.Linear classifier"
        )
    return f"{unit}.{linears[-1]}"


# model -> (its structure, {modules key: map}); entries go with their model.
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[Hashable, dict[Hashable, ModuleMap]]]
_CACHE = weakref.WeakKeyDictionary()


def _structure(model: nn.Module) -> Hashable:
    """What a map depends on: every module's name, class and identity (a swapped head,
    as :func:`~transferlens.models.helpers.reset_head` makes, is another module) and
    every parameter's name."""
    modules = tuple((name, type(module), id(module)) for name, module in model.named_modules())
    return modules, tuple(name for name, _ in model.named_parameters())


def _modules_key(modules: ModulesSpec | None) -> Hashable | None:
    """A hashable form of ``modules``, or None when it has none (then not cached)."""
    if modules is None:
        return ("derived",)
    try:
        if isinstance(modules, Mapping):
            key = ("stages", tuple((stage, tuple(names)) for stage, names in modules.items()))
        else:
            key = ("units", tuple(modules))
        hash(key)
    except TypeError:
        return None
    return key


def module_map(model: nn.Module, modules: ModulesSpec | None = None) -> ModuleMap:
    """The :class:`ModuleMap` of ``model``: from ``modules`` when given
    (:func:`explicit_map`), else from the first rule of
    :data:`~transferlens.models.module_map_rules.RULES` that recognises the model.

    Computed once per model and ``modules``: the map is cached (held weakly by the
    model) until the model's structure changes (a module added, removed or swapped,
    as :func:`~transferlens.models.helpers.reset_head` does). Raises UserInputError,
    naming the model's class and suggesting ``modules``, when no rule applies.
    """
    key = _modules_key(modules)
    structure = _structure(model)
    cached = _CACHE.get(model)
    if cached is None or cached[0] != structure:
        cached = (structure, {})
        _CACHE[model] = cached
    if key is not None and key in cached[1]:
        return cached[1][key]
    derived = _derive(model, modules)
    if key is not None:
        cached[1][key] = derived
    return derived


def _derive(model: nn.Module, modules: ModulesSpec | None) -> ModuleMap:
    if modules is not None:
        return explicit_map(model, modules)
    from transferlens.models.module_map_rules import RULES

    for rule in RULES:
        derived = rule(model)
        if derived is not None:
            return _check_head(model, check_partition(model, derived))
    raise UserInputError(
        f"no module map for {type(model).__name__}: give its units as modules: [...] "
        "(module names or globs, from input to output, the head last)"
    )


def _check_head(model: nn.Module, derived: ModuleMap) -> ModuleMap:
    """Refuse a derived map whose classifier is not in its head stage (the head finder's
    last resort, the last ``nn.Linear``, found inside a block: a conv head, a removed
    head), rather than replace a block's layer for P-T."""
    heads = [stage for stage in derived.stages if stage.name == HEAD_STAGE]
    members = [m for stage in heads for unit in stage.units for m in derived.unit(unit).members]
    classifier = derived.classifier
    if not any(classifier == m or classifier.startswith(m + ".") for m in members):
        raise UserInputError(
            f"no module map for {type(model).__name__}: the classifier found, {classifier!r}, "
            "is not in its head; give its units as modules: [...] (the head last)"
        )
    return derived


def describe(module_map: ModuleMap) -> dict[str, Any]:
    """A JSON-able summary: family, classifier, units by stage (for logs and manifests)."""
    return {
        "family": module_map.family,
        "classifier": module_map.classifier,
        "stages": {stage.name: list(stage.units) for stage in module_map.stages},
    }
