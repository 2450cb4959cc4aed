"""Models: one registry (``build_model``), the paper's Fixup ResNets, torchvision and timm.

The project's ResNets use torchvision's module names (``conv1``, ``layer1``..``layer4``
with blocks ``layerX.Y``, ``fc``). Every analysis reads a network through its module
map (:func:`module_map`: units, stages, classifier; docs/module-map.md), so a ViT, a
ConvNeXt, a Hugging Face classifier or a user's class is read the same way. See
:mod:`transferlens.models.fixup` for the paper's network.

``transferlens.models.module_map`` is the function; the module that defines it is
``transferlens.models.module_map`` in ``sys.modules`` (import names from it with
``from transferlens.models.module_map import ModuleMap``).
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
from transferlens.models.module_map import (
    ModuleMap,
    Stage,
    Unit,
    check_partition,
    explicit_map,
    module_map,
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
    "ModuleMap",
    "ScalarBiasConv2d",
    "ScalarBiasLinear",
    "Stage",
    "Unit",
    "build_model",
    "check_model_name",
    "check_partition",
    "criticality_modules",
    "explicit_map",
    "has_resnet_layout",
    "head_prefix",
    "list_families",
    "list_models",
    "load_backbone",
    "load_weights_file",
    "module_map",
    "register_model",
    "register_model_family",
    "rename_reference_fixup_keys",
    "reset_head",
    "stage_names",
]
