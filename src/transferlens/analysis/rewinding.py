"""Rewinding each unit to its initial value, with a bootstrap interval over the test set.

For each unit of the module map, every other unit final, the unit's parameters and
buffers are set to their initial values and the network is evaluated once on the
metric data (paper Fig. 5). The interval is the seeded percentile bootstrap
(:func:`~transferlens.analysis.stats.bootstrap_interval`) over the examples of that one
evaluation: for accuracy the mean of the per-example correctness vector, for mean
ROC-AUC the metric of the resampled (score, label) rows -- never another forward pass.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferlens.analysis.checks import check_task
from transferlens.analysis.evalcache import analysis_device, prepare_batches
from transferlens.analysis.perturb import ModuleSlot
from transferlens.analysis.statedict import (
    StateLike,
    UnitsLike,
    as_state_dict,
    check_modules,
    check_same_layout,
    default_modules,
)
from transferlens.analysis.stats import bootstrap_interval, check_n_bootstrap
from transferlens.metrics import Task, correct_predictions, mean_roc_auc, task_metric

COLUMNS = ("module", "rewind_metric", "rewind_metric_low", "rewind_metric_high")


def metric_interval(
    logits: torch.Tensor,
    targets: torch.Tensor,
    task: Task,
    n_bootstrap: int,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap interval of the task metric over the rows (examples) of ``logits``.

    Accuracy: the mean of resampled correctness values; ROC-AUC: recomputed per resample.
    ``n_bootstrap = 0``: ``(nan, nan)``.
    """
    if check_n_bootstrap(n_bootstrap) == 0 or len(targets) == 0:
        return float("nan"), float("nan")
    if task == "multiclass":
        correct = correct_predictions(logits, targets).double().cpu().numpy()
        return bootstrap_interval(correct, n_bootstrap, confidence, seed)
    scores, labels = logits.double().cpu(), targets.cpu()

    def statistic(indices: np.ndarray) -> float:
        rows = torch.as_tensor(indices)
        return mean_roc_auc(scores[rows], labels[rows])

    return bootstrap_interval(statistic, n_bootstrap, confidence, seed, n=len(labels))


def rewinding(
    model_final: nn.Module,
    model_init: StateLike,
    loader: Iterable,
    task: Task,
    *,
    modules: UnitsLike | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    device: str | torch.device | None = None,
) -> pd.DataFrame:
    """Per unit: the metric with it alone rewound to ``model_init``, and its interval.

    Columns :data:`COLUMNS`, one row per unit of ``modules`` (default: the model's module
    map), in map order. ``rewind_metric`` is what
    :func:`~transferlens.analysis.criticality.module_criticality` reports for the same
    data; ``rewind_metric_low/high`` the bootstrap interval over the examples
    (:func:`metric_interval`, ``n_bootstrap`` resamples from ``seed``).
    """
    check_task(task)
    check_n_bootstrap(n_bootstrap)
    device = analysis_device(device, model_final)
    working = copy.deepcopy(model_final).to(device).eval()
    state_final = working.state_dict()
    state_init = {k: v.detach().to(device) for k, v in as_state_dict(model_init).items()}
    check_same_layout(state_final, state_init)
    units = check_modules(state_final, default_modules(model_final) if modules is None else modules)
    batches = prepare_batches(loader, device)
    rows = []
    for module, members in units.items():
        slot = ModuleSlot(working, module, members)
        slot.set(slot.values_from(state_init))
        with torch.inference_mode():
            outputs = [(working(inputs), targets) for inputs, targets in batches]
        slot.restore()
        logits = torch.cat([o for o, _ in outputs]).float()
        targets = torch.cat([t for _, t in outputs])
        metric = task_metric(logits, targets, task)
        low, high = metric_interval(logits, targets, task, n_bootstrap, seed, confidence)
        rows.append((module, metric, low, high))
    return pd.DataFrame(rows, columns=list(COLUMNS))
