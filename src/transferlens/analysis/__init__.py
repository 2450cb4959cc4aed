"""The paper's seven analyses, as a library over any ``nn.Module`` and ``DataLoader``.

Each analysis returns one result dataclass holding its values and the settings it
used; ``result.to_frame()`` is its tidy table (DESIGN.md's columns minus ``target``).

1. feature reuse: :func:`feature_reuse` (module ``reuse``)
2. common and uncommon mistakes: :func:`mistakes` (``model_mistakes``)
3. CKA: :func:`cka`, :func:`cka_many`, :func:`cka_matrix` (``model_cka``)
4. parameter distance: :func:`parameter_distance` (``distance``)
5. performance barrier: :func:`interpolation_curve`, :func:`barrier` (``interpolation``)
6. module criticality: :func:`module_criticality`, :func:`rewind_module`
   (``criticality``); its path figure :func:`path_grid` (``criticality_path``)
7. choice of pre-training checkpoint: :func:`pretrain_checkpoints` (``pretraining``)

The weight-space analyses (4 and 6) report one row per **unit** of the model's module
map (:func:`transferlens.models.module_map.module_map`: ``conv1``, each block, the
head for a ResNet; a ViT's stem, each block, its head); their ``modules`` argument
also takes a list of names or ``{unit: [prefixes]}``. Distance reports each stage too
(:attr:`DistanceResult.per_stage`).

Modules are named after the analysis they hold; none is named like a function it
exports (``analysis.cka`` is the function, never a module).
"""

from transferlens.analysis.cka_estimators import MinibatchCKA, linear_cka, rbf_cka
from transferlens.analysis.criticality import (
    CriticalityResult,
    ModuleCriticality,
    criticality_grid,
    module_criticality,
    rewind_module,
)
from transferlens.analysis.criticality_path import PathGridResult, path_grid
from transferlens.analysis.distance import DistanceResult, parameter_distance
from transferlens.analysis.features import FeatureExtractor, capture_features
from transferlens.analysis.interpolation import (
    InterpolationResult,
    barrier,
    interpolate_state_dicts,
    interpolation_curve,
    lambda_grid,
    recompute_batchnorm,
)
from transferlens.analysis.model_cka import CKAResult, cka, cka_many, cka_matrix
from transferlens.analysis.model_mistakes import (
    MistakesResult,
    PairMistakes,
    correctness,
    error_consistency,
    mistakes,
)
from transferlens.analysis.pretraining import PretrainCheckpointsResult, pretrain_checkpoints
from transferlens.analysis.reuse import ReuseResult, feature_reuse
from transferlens.analysis.stats import bootstrap_interval
from transferlens.analysis.unit_alignment import Alignment, align, alignment
from transferlens.analysis.unit_repair import RepairResult, repair, repair_details

__all__ = [
    # the seven analyses
    "feature_reuse",
    "mistakes",
    "cka",
    "cka_many",
    "cka_matrix",
    "parameter_distance",
    "interpolation_curve",
    "barrier",
    "module_criticality",
    "rewind_module",
    "path_grid",
    "pretrain_checkpoints",
    # permutation alignment (Git Re-Basin)
    "align",
    "alignment",
    "Alignment",
    # REPAIR of interpolated networks
    "repair",
    "repair_details",
    "RepairResult",
    # their results
    "ReuseResult",
    "MistakesResult",
    "PairMistakes",
    "CKAResult",
    "DistanceResult",
    "InterpolationResult",
    "CriticalityResult",
    "ModuleCriticality",
    "PathGridResult",
    "PretrainCheckpointsResult",
    # building blocks
    "MinibatchCKA",
    "linear_cka",
    "rbf_cka",
    "FeatureExtractor",
    "capture_features",
    "error_consistency",
    "correctness",
    "interpolate_state_dicts",
    "lambda_grid",
    "recompute_batchnorm",
    "criticality_grid",
    "bootstrap_interval",
]
