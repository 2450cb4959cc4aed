"""The module-map rule of Hugging Face image classifiers (``*ForImageClassification``).

transformers' classifiers are a base model (``model.<base_model_prefix>``: ``vit``,
``dinov2``, ``convnext``, ``resnet``, ...) and a ``classifier``. In the base model the
embeddings come first (the stem, one unit: ``vit.embeddings`` with its class token,
position embeddings and, for DINOv2, ``mask_token`` and register tokens), then the
encoder's list of layers or stages (the body), then a final norm (the head, with the
classifier). transformers 5.x names the body ``vit.layers`` (ViT),
``dinov2.encoder.layer`` (DINOv2), ``convnext.encoder.stages`` (ConvNeXt: units
``stages.i.downsampling_layer`` and ``stages.i.layers.j``) and
``resnet.encoder.stages`` (ResNet: units ``stages.i.layers.j``); older releases'
``vit.encoder.layer`` is found the same way. Every body module named here returns a
plain tensor, so CKA needs no ``:out`` key for the stage outputs.

The classifier is ``classifier`` (a Linear) or its last Linear (ResNet's
``classifier.1`` after a Flatten). transformers is never imported: a model is
recognised by its class name and attributes.
"""

from __future__ import annotations

from torch import nn

from transferlens.models.helpers import head_prefix
from transferlens.models.module_map import HEAD_STAGE, ModuleMap, build_map
from transferlens.models.module_map_timm import body_stages
from transferlens.models.module_map_walk import find_body, last_module, split_around, stem_unit

BODIES = ("layer", "layers", "stages")
# Tokens the embeddings put before the patch tokens, by parameter name.
PREFIX_TOKENS = ("cls_token", "distillation_token")
REGISTER_TOKENS = "register_tokens"


def hf_base(model: nn.Module) -> str | None:
    """The base model's name (``base_model_prefix``) of a Hugging Face image classifier,
    or None for any other model."""
    if not type(model).__name__.endswith("ForImageClassification"):
        return None
    prefix = getattr(model, "base_model_prefix", None)
    if not isinstance(prefix, str) or not isinstance(getattr(model, prefix, None), nn.Module):
        return None
    if not isinstance(getattr(model, "classifier", None), nn.Module):
        return None
    return prefix


def prefix_tokens(model: nn.Module, stem: str) -> int:
    """Class, distillation and register tokens held by the embeddings ``stem``."""
    params = dict(model.get_submodule(stem).named_parameters(recurse=False))
    count = sum(1 for name in PREFIX_TOKENS if name in params)
    registers = params.get(REGISTER_TOKENS)
    if registers is not None and registers.dim() >= 2:
        count += int(registers.shape[-2])
    return count


def hf_map(model: nn.Module) -> ModuleMap | None:
    """Hugging Face ``*ForImageClassification`` models (see the module docstring); None
    for any other model or one whose body is not found."""
    base = hf_base(model)
    if base is None:
        return None
    body = find_body(model, base, BODIES)
    if body is None:
        return None
    before, after = split_around(model, body)
    stages, isotropic = body_stages(model, body)
    output = last_module(model, before)
    if output is None:
        return None
    stages.insert(0, ("stem", stem_unit(before), output))
    classifier = head_prefix(model)
    stages.append((HEAD_STAGE, after, classifier))
    family = f"hf-{base.replace('_', '-')}"
    tokens = prefix_tokens(model, output) if isotropic else None
    return build_map(stages, classifier, family, tokens)
