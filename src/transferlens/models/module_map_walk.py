"""Walking a network's modules, for the module-map rules.

The rules of :mod:`transferlens.models.module_map_rules` describe a family by where its
"body" is (the container of blocks or stages) and cut the rest of the network around
it: what is registered before the body is the stem, what comes after is the head.
These helpers answer the structural questions that takes: which modules own
parameters, which containers hold blocks, and which units a stage divides into.
Names are full dotted module names (``"stages.1.blocks.0"``) throughout.
"""

from __future__ import annotations

from torch import nn

UnitList = list[tuple[str, tuple[str, ...]]]
# The children a stage keeps its blocks in (timm: ``blocks``; Hugging Face: ``layers``).
BLOCK_LISTS = ("blocks", "layers")


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def owns_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def own_parameters(module: nn.Module, prefix: str = "") -> UnitList:
    """Parameters held by ``module`` itself (not by a child): one unit each."""
    return [
        (join(prefix, name), (join(prefix, name),))
        for name, _ in module.named_parameters(recurse=False)
    ]


def has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def is_container(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential | nn.ModuleList)


def is_composite(module: nn.Module) -> bool:
    """A block built of layers: some child owns parameters."""
    return any(owns_parameters(child) for child in module.children())


def holds_blocks(module: nn.Module) -> bool:
    """A Sequential or ModuleList with a composite parameterised child (a list of blocks,
    not a short run of plain layers such as a downsampling norm + conv)."""
    return is_container(module) and any(is_composite(child) for child in module.children())


def is_stage(module: nn.Module) -> bool:
    """A stage of a hierarchical body: itself a list of blocks (EfficientNet's
    ``blocks.i``) or a module keeping one (ConvNeXt's ``stages.i.blocks``)."""
    return is_container(module) or any(holds_blocks(child) for child in module.children())


def stage_units(model: nn.Module, name: str) -> UnitList:
    """The units of the stage ``name``: each parameterised block of a list of blocks, any
    other parameterised child whole (a downsampling layer), its own parameters first."""
    stage = model.get_submodule(name)
    if is_container(stage):
        return [
            (join(name, child), (join(name, child),))
            for child, module in stage.named_children()
            if owns_parameters(module)
        ]
    units = own_parameters(stage, name)
    for child, module in stage.named_children():
        full = join(name, child)
        if holds_blocks(module):
            units += [
                (join(full, block), (join(full, block),))
                for block, inner in module.named_children()
                if owns_parameters(inner)
            ]
        elif owns_parameters(module):
            units.append((full, (full,)))
    return units


def find_body(model: nn.Module, root: str, names: tuple[str, ...]) -> str | None:
    """The first container of blocks under ``root`` (searched child by child, one level
    of nesting: ``vit.layers``, ``dinov2.encoder.layer``) whose name is in ``names``."""
    parent = model.get_submodule(root) if root else model
    for child, module in parent.named_children():
        if child in names and is_container(module) and owns_parameters(module):
            return join(root, child)
        for grandchild, inner in module.named_children():
            if grandchild in names and is_container(inner) and owns_parameters(inner):
                return join(join(root, child), grandchild)
    return None


def split_around(model: nn.Module, body: str) -> tuple[UnitList, UnitList]:
    """``(before, after)``: the parameterised modules registered before and after the
    module ``body``, descending only into the body's ancestors; the ancestors' own
    parameters (a ViT's ``cls_token``, ``pos_embed``) come first in ``before``."""
    before: UnitList = []
    after: UnitList = []
    params: UnitList = []

    def walk(prefix: str, module: nn.Module) -> bool:
        params.extend(own_parameters(module, prefix))
        seen = False
        for child, inner in module.named_children():
            full = join(prefix, child)
            if full == body:
                seen = True
            elif body.startswith(full + "."):
                seen = walk(full, inner)
            elif owns_parameters(inner):
                (after if seen else before).append((full, (full,)))
        return seen

    walk("", model)
    return params + before, after


def stem_unit(units: UnitList) -> UnitList:
    """The stem as one unit: a single module keeps its name, several members form
    ``stem`` (a ViT's ``cls_token, pos_embed, patch_embed``)."""
    if len(units) <= 1:
        return units
    return [("stem", tuple(member for _, members in units for member in members))]


def last_module(model: nn.Module, units: UnitList) -> str | None:
    """The last member of ``units`` that is a module (a parameter has no output)."""
    members = [member for _, members in units for member in members]
    modules = [member for member in members if has_module(model, member)]
    return modules[-1] if modules else None
