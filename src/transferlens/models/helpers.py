"""Where the head is, how to replace it, and how a network divides into named modules.

These helpers work on the project's Fixup ResNets, torchvision ResNets, timm and
Hugging Face models and a user's own classes alike. Two lists predate the module map
(:mod:`transferlens.models.module_map`) and keep their ResNet answers:

- :func:`stage_names`: ``conv1`` and the four stages, the layers whose outputs
  the paper compares with CKA; for any other model, the outputs of the module map's
  stages (its stem and body stages, not the head);
- :func:`criticality_modules`: ``conv1``, every residual block ``layerX.Y`` and
  the head -- the paper's 18 modules of ResNet-50. Every parameter belongs to
  exactly one of them, so rewinding them one at a time covers the network.
  Networks with parameters outside these (torchvision's stem ``bn1``) get those
  top-level modules listed too, in model order. For any other model: the module
  map's units.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from transferlens.errors import UserInputError
from transferlens.models.fixup import ScalarBiasLinear
from transferlens.models.module_map import HEAD_STAGE, module_map
from transferlens.models.module_map_walk import has_module

STAGES = ("layer1", "layer2", "layer3", "layer4")


def _class_name(model: nn.Module) -> str:
    return type(model).__name__


def has_resnet_layout(model: nn.Module) -> bool:
    """True for torchvision-style ResNets: ``conv1`` and ``layer1``..``layer4`` as Sequentials."""
    return isinstance(getattr(model, "conv1", None), nn.Module) and all(
        isinstance(getattr(model, stage, None), nn.Sequential) for stage in STAGES
    )


def _last_linear(module: nn.Module, prefix: str) -> str | None:
    """The full name of the last ``nn.Linear`` in ``module`` (itself included), in
    registration order, or None."""
    names = [name for name, child in module.named_modules() if isinstance(child, nn.Linear)]
    if not names:
        return None
    return ".".join(part for part in (prefix, names[-1]) if part)


def head_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the classifier head (``"fc"`` for ResNets).

    In order: the one timm names in ``pretrained_cfg["classifier"]`` (``default_cfg``
    in older timm); ``fc`` when it is an ``nn.Linear``; the module ``get_classifier()``
    returns; Hugging Face's ``classifier`` (an ``nn.Linear``, or the last one inside
    it: ``classifier.1`` of a ResNet's Flatten + Linear); last, the model's last
    ``nn.Linear`` in registration order (a user's head called ``linear``).
    """
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(config, dict) and config.get("classifier"):
        classifier = config["classifier"]
        if isinstance(classifier, str) and has_module(model, classifier):
            return classifier
        if not isinstance(classifier, str):
            raise UserInputError(
                f"{_class_name(model)} has several classifier heads {classifier!r}; "
                "only single-head models are supported"
            )
    if isinstance(getattr(model, "fc", None), nn.Linear):
        return "fc"
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        classifier = get_classifier()
        for name, module in model.named_modules():
            if module is classifier and name:
                return name
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Module):
        found = _last_linear(classifier, "classifier")
        if found is not None:
            return found
    found = _last_linear(model, "")
    if found:
        return found
    raise UserInputError(f"cannot find the classifier head of {_class_name(model)}")


def _default_linear_init_(linear: nn.Linear, generator: torch.Generator) -> None:
    """nn.Linear's own default init, drawn from ``generator``.

    w ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)),
    b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
    if linear.bias is not None:
        bound = 1.0 / math.sqrt(linear.in_features) if linear.in_features > 0 else 0.0
        nn.init.uniform_(linear.bias, -bound, bound, generator=generator)


def _fresh_linear(old: nn.Linear, num_classes: int, seed: int | None) -> nn.Linear:
    cls = ScalarBiasLinear if isinstance(old, ScalarBiasLinear) else nn.Linear
    if seed is None:
        # Global RNG, exactly as constructing nn.Linear does.
        fresh = cls(old.in_features, num_classes, bias=old.bias is not None)
    else:
        # Built on the meta device so that the global RNG is not consumed, then
        # initialised on the CPU from its own generator (reproducible on any device).
        with torch.device("meta"):
            fresh = cls(old.in_features, num_classes, bias=old.bias is not None)
        fresh = fresh.to_empty(device="cpu")
        _default_linear_init_(fresh, torch.Generator().manual_seed(seed))
    if isinstance(fresh, ScalarBiasLinear):
        with torch.no_grad():
            fresh.input_bias.zero_()
    return fresh.to(device=old.weight.device, dtype=old.weight.dtype)


def reset_head(
    model: nn.Module, num_classes: int, seed: int | None = None, head: str | None = None
) -> nn.Module:
    """Replace the head with a freshly initialised one of ``num_classes`` outputs, in place.

    The head is ``head`` when given (an ``nn.Linear``: the classifier of an explicit
    module map), else :func:`head_prefix`'s (``fc``, timm's ``head`` or ``head.fc``,
    Hugging Face's ``classifier`` or ``classifier.1``, a user's ``linear``). The new head has
    PyTorch's default ``nn.Linear`` init, drawn from
    ``torch.Generator().manual_seed(seed)`` when ``seed`` is given (then the
    global RNG is untouched and the result equals ``nn.Linear`` built right
    after ``torch.manual_seed(seed)``). A Fixup head's ``input_bias`` restarts
    at 0. Every other parameter is left as it is. The model's class count follows
    (timm's ``num_classes``; Hugging Face's ``num_labels`` and ``config.num_labels``).
    Returns ``model``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"num_classes must be a positive integer (got {num_classes!r})")
    prefix = head_prefix(model) if head is None else head
    try:
        old = model.get_submodule(prefix)
    except AttributeError:
        raise UserInputError(
            f"the head {prefix!r} is not a module of {_class_name(model)}"
        ) from None
    if isinstance(old, nn.Linear):
        model.set_submodule(prefix, _fresh_linear(old, num_classes, seed))
    elif head is None and callable(getattr(model, "reset_classifier", None)):
        # A non-linear timm head (e.g. a 1x1 conv): timm rebuilds it with its own init.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model.reset_classifier(num_classes)
    else:
        raise UserInputError(
            f"cannot reset the head {prefix!r} ({type(old).__name__}) of {_class_name(model)}"
        )
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
    if hasattr(model, "num_labels"):
        model.num_labels = num_classes
    config = getattr(model, "config", None)
    if getattr(config, "num_labels", num_classes) != num_classes:
        config.num_labels = num_classes  # transformers' setter also resizes id2label
    return model


def stage_names(model: nn.Module) -> list[str]:
    """``["conv1", "layer1", "layer2", "layer3", "layer4"]`` (the paper's CKA layers).

    For any other model, the outputs of its module map's stages before the head
    (:attr:`~transferlens.models.module_map.ModuleMap.cka_layers` without the
    classifier's input): a timm ViT's ``norm_pre, blocks.0, ...``.
    """
    if has_resnet_layout(model):
        return ["conv1", *STAGES]
    return [stage.output for stage in module_map(model).stages if stage.name != HEAD_STAGE]


def criticality_modules(model: nn.Module) -> list[str]:
    """``conv1``, each block ``layerX.Y``, the head: a partition of every parameter.

    Top-level modules are visited in model order; a stage contributes its
    blocks, any other module with parameters contributes itself (``bn1`` in
    torchvision ResNets). For Fixup ResNet-50: conv1, 16 blocks, fc (18 modules).
    For any other model, the units of its module map
    (:func:`~transferlens.models.module_map.module_map`): a timm ViT's ``stem``,
    ``blocks.0``, ..., ``norm``, ``head``.
    """
    if not has_resnet_layout(model):
        return module_map(model).unit_names
    if any(True for _ in model.parameters(recurse=False)):
        raise UserInputError(
            f"{_class_name(model)} has parameters outside every module; cannot partition it"
        )
    modules: list[str] = []
    for name, child in model.named_children():
        if name in STAGES:
            modules += [f"{name}.{block}" for block, _ in child.named_children()]
        elif any(True for _ in child.parameters()):
            modules.append(name)
    return modules
