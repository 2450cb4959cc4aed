"""The module-map rule of timm models with a body of blocks or stages.

One rule covers timm's ViT and DeiT (``blocks``: isotropic, each block its own stage),
ConvNeXt (``stages``), Swin (``layers``) and EfficientNet / MobileNet (``blocks`` of
block lists): each stage ``i`` of a hierarchical body is a stage of the map whose units
are its downsampling layer (if it has parameters) and each block, and whose output is
the stage module. The stem is what is registered before the body (one unit), the head
what comes after it (one unit per module); the classifier is the one timm names in
``pretrained_cfg``.

timm is never imported: a model is recognised by the module its class comes from.
"""

from __future__ import annotations

from torch import nn

from transferlens.models.helpers import head_prefix
from transferlens.models.module_map import HEAD_STAGE, ModuleMap, build_map
from transferlens.models.module_map_walk import (
    has_module,
    is_container,
    is_stage,
    join,
    last_module,
    owns_parameters,
    split_around,
    stage_units,
    stem_unit,
)

BODIES = ("blocks", "stages", "layers")
FAMILIES = {
    "VisionTransformer": "timm-vit",
    "ConvNeXt": "timm-convnext",
    "SwinTransformer": "timm-swin",
    "EfficientNet": "timm-efficientnet",
}


def is_timm_model(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


def timm_body(model: nn.Module) -> str | None:
    """The first top-level child named ``blocks``, ``stages`` or ``layers`` holding
    parameterised modules."""
    for name, child in model.named_children():
        if name in BODIES and is_container(child) and owns_parameters(child):
            return name
    return None


def body_stages(
    model: nn.Module, body: str
) -> tuple[list[tuple[str, list[tuple[str, tuple[str, ...]]], str]], bool]:
    """The map's stages for ``body`` and whether it is isotropic (a list of blocks, each
    its own stage and unit) rather than hierarchical (a list of stages of blocks)."""
    children = [
        (join(body, name), child)
        for name, child in model.get_submodule(body).named_children()
        if owns_parameters(child)
    ]
    isotropic = not all(is_stage(child) for _, child in children)
    if isotropic:
        return [(name, [(name, (name,))], name) for name, _ in children], True
    return [(name, stage_units(model, name), name) for name, _ in children], False


def stem_output(model: nn.Module, stem: list[tuple[str, tuple[str, ...]]]) -> str | None:
    """The layer whose output is the stem's: timm's ViTs call ``norm_pre`` (an
    ``nn.Identity`` when unused, which still runs forward hooks) right after adding the
    class token and position embedding, so its output is the tokens the blocks see;
    otherwise the stem's last module."""
    names = [name for name, _ in model.named_children()]
    body = timm_body(model)
    if "norm_pre" in names and body is not None and names.index("norm_pre") < names.index(body):
        return "norm_pre"
    return last_module(model, stem)


def timm_map(model: nn.Module) -> ModuleMap | None:
    """timm models with a ``blocks``/``stages``/``layers`` body (see the module docstring);
    None for any other model."""
    if not is_timm_model(model):
        return None
    body = timm_body(model)
    if body is None:
        return None
    before, after = split_around(model, body)
    stages, isotropic = body_stages(model, body)
    stem = stem_unit(before)
    output = stem_output(model, before)
    if stem and output is not None and has_module(model, output):
        stages.insert(0, ("stem", stem, output))
    elif stem:  # a stem of bare parameters: its units join the first stage
        first_name, first_units, first_output = stages[0]
        stages[0] = (first_name, stem + first_units, first_output)
    classifier = head_prefix(model)
    stages.append((HEAD_STAGE, after, classifier))
    family = FAMILIES.get(type(model).__name__, f"timm-{type(model).__name__.lower()}")
    prefix = getattr(model, "num_prefix_tokens", None) if isotropic else None
    prefix_tokens = int(prefix) if isinstance(prefix, int) else None
    return build_map(stages, classifier, family, prefix_tokens)
