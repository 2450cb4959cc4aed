"""How a :class:`~transferlens.models.module_map.ModuleMap` is derived, one rule per family.

A rule takes a model and returns its map, or None when the model is not of its
family. :data:`RULES` is tried in order: ResNets (torchvision, Fixup, timm's),
timm models with a body of blocks or stages (:mod:`~transferlens.models.module_map_timm`),
Hugging Face image classifiers (:mod:`~transferlens.models.module_map_hf`), and last
the generic rule, which accepts any model.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from transferlens.models.helpers import STAGES, has_resnet_layout, head_prefix
from transferlens.models.module_map import HEAD_STAGE, ModuleMap, build_map
from transferlens.models.module_map_hf import hf_map
from transferlens.models.module_map_timm import timm_map
from transferlens.models.module_map_walk import (
    UnitList,
    has_module,
    holds_blocks,
    is_container,
    own_parameters,
    owns_parameters,
)

Rule = Callable[[nn.Module], ModuleMap | None]


def resnet_map(model: nn.Module) -> ModuleMap | None:
    """torchvision and Fixup ResNets: the stem's modules (``conv1``, ``bn1``), each
    block ``layerX.Y``, the head ``fc``; CKA on ``conv1`` (the paper's), each stage and
    ``fc:in``. The units are the paper's 18 modules of ResNet-50."""
    if not has_resnet_layout(model) or own_parameters(model):
        return None
    stem: UnitList = []
    stages = []
    head: UnitList = []
    for name, child in model.named_children():
        if name in STAGES:
            blocks = [
                (f"{name}.{block}", (f"{name}.{block}",)) for block, _ in child.named_children()
            ]
            stages.append((name, blocks, name))
        elif owns_parameters(child):
            (head if stages else stem).append((name, (name,)))
    classifier = head_prefix(model)
    return build_map(
        [("stem", stem, "conv1"), *stages, (HEAD_STAGE, head, classifier)], classifier, "resnet"
    )


def _is_block_container(module: nn.Module) -> bool:
    """A Sequential or ModuleList of blocks: two or more parameterised children, or one
    composite block (a CIFAR ResNet's ``layer1`` of a single block)."""
    children = [child for _, child in module.named_children() if owns_parameters(child)]
    return is_container(module) and (len(children) >= 2 or holds_blocks(module))


def generic_map(model: nn.Module) -> ModuleMap:
    """Any model: its top-level children in registration order. A Sequential or
    ModuleList of blocks (two or more parameterised children, or one block built of
    layers) is a stage whose units are those children; the single modules before the
    first such stage form the ``stem``, those after the last one the ``head`` (the last
    unit when nothing follows), and the classifier is found by
    :func:`~transferlens.models.helpers.head_prefix` (a user's ``linear`` head: the
    model's last ``nn.Linear``). Each stage's output is its container; the stem's is
    its last module."""
    groups: list[tuple[str | None, UnitList]] = []  # None: not a block container
    for name, child in model.named_children():
        if _is_block_container(child):
            units = [
                (f"{name}.{sub}", (f"{name}.{sub}",))
                for sub, grandchild in child.named_children()
                if owns_parameters(grandchild)
            ]
            groups.append((name, units))
        elif owns_parameters(child):
            groups.append((None, [(name, (name,))]))
    own = own_parameters(model)
    classifier = head_prefix(model)
    block_indices = [i for i, (name, _) in enumerate(groups) if name is not None]
    stages = []
    if block_indices:
        first, last = block_indices[0], block_indices[-1]
        stem = own + [unit for _, units in groups[:first] for unit in units]
        if stem:
            stages.append(("stem", stem, stem[-1][0]))
        for name, units in groups[first : last + 1]:
            stage = name if name is not None else units[0][0]
            stages.append((stage, units, stage))
        head = [unit for _, units in groups[last + 1 :] for unit in units]
        if not head:  # the network ends in its list of blocks: the last one is the head
            name, units, output = stages[-1]
            head = [units.pop()]
            if not units:
                stages.pop()
    else:
        units = own + [unit for _, group in groups for unit in group]
        stages = [(name, [(name, members)], name) for name, members in units[:-1]]
        head = units[-1:]
    stages.append((HEAD_STAGE, head, classifier))
    # A parameter-only stem (a bare tensor) has no output to hook: CKA starts after it.
    stages = [
        (name, units, output if has_module(model, output) else units[-1][0])
        for name, units, output in stages
    ]
    return build_map(stages, classifier, "generic")


# Tried in order; the generic rule accepts every model, so it comes last.
RULES: list[Rule] = [resnet_map, timm_map, hf_map, generic_map]
