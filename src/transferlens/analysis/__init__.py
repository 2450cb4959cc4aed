"""The paper's seven analyses, as a library over any ``nn.Module`` and ``DataLoader``.

Names are resolved lazily from their modules so that importing one analysis does not
import all of them (and their dependencies).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # stats
    "bootstrap_interval": "stats",
    # features and CKA
    "FeatureExtractor": "features",
    "capture_features": "features",
    "linear_cka": "cka_estimators",
    "rbf_cka": "cka_estimators",
    "MinibatchCKA": "cka_estimators",
    "cka": "cka_models",
    "cka_matrix": "cka_models",
    # mistakes
    "error_consistency": "mistake_tables",
    "mistakes": "mistake_tables",
    "correctness": "mistake_tables",
    # distance
    "parameter_distance": "distance",
    # interpolation
    "interpolate_state_dicts": "interpolation",
    "lambda_grid": "interpolation",
    "interpolation_curve": "interpolation",
    "barrier": "interpolation",
    "recompute_batchnorm": "interpolation",
    # criticality
    "module_criticality": "criticality",
    "rewind_module": "criticality",
    "path_grid": "criticality",
    # study-level tables
    "feature_reuse": "reuse",
    "pretrain_checkpoints": "pretraining",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"transferlens.analysis.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'transferlens.analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
