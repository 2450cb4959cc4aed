"""Models: one registry (``build_model``), the paper's Fixup ResNets, torchvision and timm.

Every network uses torchvision's module names (``conv1``, ``layer1``..``layer4``
with blocks ``layerX.Y``, ``fc``) so that layer names mean the same thing in
every analysis. See :mod:`transferlens.models.fixup` for the paper's network.
"""

from transferlens.models.fixup import (
    FixupBasicBlock,
    FixupBottleneck,
    FixupResNet,
    ScalarBiasConv2d,
    ScalarBiasLinear,
)
from transferlens.models.helpers import (
    criticality_modules,
    has_resnet_layout,
    head_prefix,
    reset_head,
    stage_names,
)
from transferlens.models.registry import (
    build_model,
    check_model_name,
    list_families,
    list_models,
    register_model,
    register_model_family,
)
from transferlens.models.weights import (
    load_backbone,
    load_weights_file,
    rename_reference_fixup_keys,
)

__all__ = [
    "FixupBasicBlock",
    "FixupBottleneck",
    "FixupResNet",
    "ScalarBiasConv2d",
    "ScalarBiasLinear",
    "build_model",
    "check_model_name",
    "criticality_modules",
    "has_resnet_layout",
    "head_prefix",
    "list_families",
    "list_models",
    "load_backbone",
    "load_weights_file",
    "register_model",
    "register_model_family",
    "rename_reference_fixup_keys",
    "reset_head",
    "stage_names",
]
