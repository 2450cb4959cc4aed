"""Analysis 5: the performance barrier on the straight line between two networks.

Every point of the path is the network with state ``(1 - lam) a + lam b`` (the whole
state: parameters and floating buffers), evaluated on the whole evaluation set. The
barrier is how far the loss rises above (and the metric falls below) the straight
line between the two ends::

    loss_barrier   = max_lam  L(lam) - ((1 - lam) L(0) + lam L(1))
    metric_barrier = max_lam  ((1 - lam) M(0) + lam M(1)) - M(lam)

Both are 0 when the path stays on or below (above, for the metric) that line.

Networks with BatchNorm: a running mean and variance interpolated between two
networks are not the statistics of the interpolated network's activations, so by
default (``bn_mode="auto"``) they are re-estimated at every lambda on training
batches (:func:`recompute_batchnorm`). ``bn_mode="interpolate"`` interpolates them
like any other buffer instead. The paper's Fixup networks have no BatchNorm, where
both modes coincide.

Every point keeps each example's loss (and, for ``multiclass``, whether it was right),
so that the barrier's interval over the evaluation set
(:mod:`~transferlens.analysis.barrier_stats`) resamples them without another forward
pass. ``repair=True`` REPAIRs every interior point
(:func:`~transferlens.analysis.unit_repair.repair_details`, docs/alignment.md) on the
training batches before it is evaluated; ``model_b`` should then be aligned to
``model_a`` (:func:`~transferlens.analysis.unit_alignment.align`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from transferlens.analysis.checks import check_count, check_ordered_loader, check_task
from transferlens.analysis.evalcache import (
    Batch,
    analysis_device,
    prepare_batches,
)
from transferlens.analysis.statedict import StateLike, as_state_dict, check_same_layout, is_floating
from transferlens.errors import UserInputError
from transferlens.evaluation import EvalResult, evaluation_mode, model_device
from transferlens.metrics import Task, correct_predictions, mean_roc_auc, task_loss

BN_MODES = ("auto", "recompute", "interpolate")


def interpolate_state_dicts(a: StateLike, b: StateLike, lam: float) -> dict[str, torch.Tensor]:
    """The state ``(1 - lam) a + lam b``: floating parameters and buffers interpolated.

    Integer buffers (``num_batches_tracked``) are copied from ``a`` (from ``b`` at
    ``lam = 1``). ``lam = 0`` and ``lam = 1`` return copies of ``a`` and ``b`` exactly
    (bit for bit), handled explicitly; in between :func:`torch.lerp` computes the same line, exactly equal
    to ``a`` wherever ``a == b``. Values of ``b`` are moved to ``a``'s device and dtype.
    """
    lam = float(lam)
    if not math.isfinite(lam):
        raise UserInputError(f"lambda must be a finite number (got {lam})")
    state_a, state_b = as_state_dict(a, "first model"), as_state_dict(b, "second model")
    check_same_layout(state_a, state_b)
    mixed: dict[str, torch.Tensor] = {}
    for key, tensor_a in state_a.items():
        tensor_a = tensor_a.detach()
        tensor_b = state_b[key].detach().to(device=tensor_a.device)
        if lam == 1.0:
            mixed[key] = tensor_b.to(dtype=tensor_a.dtype).clone()
        elif not is_floating(tensor_a) or lam == 0.0:
            mixed[key] = tensor_a.clone()
        else:
            mixed[key] = torch.lerp(tensor_a, tensor_b.to(dtype=tensor_a.dtype), lam)
    return mixed


def lambda_grid(n: int = 11) -> list[float]:
    """``n`` equally spaced values from 0 to 1, both ends included (the paper: 50 or 20)."""
    check_count(n, "the number of lambda grid points", minimum=2)
    return [float(value) for value in np.linspace(0.0, 1.0, n)]


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[Batch]) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``batches``, in place.

    Statistics are reset and ``momentum`` set to ``None`` (PyTorch's cumulative
    average), so that after the pass running_mean / running_var are the averages
    over the batches of each batch's mean / unbiased variance. Only the BatchNorm
    layers run in training mode: dropout and the like stay in evaluation mode
    (unlike ``torch.optim.swa_utils.update_bn``, which trains the whole model).
    Momenta and the mode of every module are restored afterwards.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return model
    momenta = [layer.momentum for layer in layers]
    with evaluation_mode([model]):
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        try:
            for inputs, _ in batches:
                model(inputs)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum
    return model


@dataclass(frozen=True)
class InterpolationResult:
    """Loss and metric of ``(1 - lam) a + lam b`` at each lambda of ``lams``.

    ``bn_mode``: how BatchNorm statistics were handled (``recompute`` or
    ``interpolate``); ``settings``: ``lams``, ``bn_mode`` (as asked), ``bn_batches``
    and ``repair``. ``example_loss``: ``[len(lams), n]`` float64, each example's loss
    at each lambda (``loss`` is its row mean); ``example_correct``: the same of 0/1
    correctness for ``multiclass`` (``metric`` is its row mean), None for
    ``multilabel`` (a ROC-AUC is not a mean over examples).
    """

    lams: tuple[float, ...]
    loss: tuple[float, ...]
    metric: tuple[float, ...]
    bn_mode: str
    settings: dict[str, Any]
    example_loss: np.ndarray | None = field(default=None, repr=False, compare=False)
    example_correct: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_frame(self) -> pd.DataFrame:
        """Columns ``lam, loss, metric``, one row per lambda in the order asked."""
        rows = list(zip(self.lams, self.loss, self.metric))
        return pd.DataFrame(rows, columns=["lam", "loss", "metric"])


def _resolve_bn_mode(model: nn.Module, bn_mode: str, train_loader: object) -> str:
    if bn_mode not in BN_MODES:
        raise UserInputError(f"bn_mode must be one of {', '.join(BN_MODES)} (got {bn_mode!r})")
    has_bn = bool(batchnorm_layers(model))
    if bn_mode == "auto":
        bn_mode = "recompute" if has_bn else "interpolate"
    if bn_mode == "recompute" and has_bn and train_loader is None:
        raise UserInputError(
            "the model has BatchNorm: pass train_loader to re-estimate its statistics "
            "along the path, or bn_mode='interpolate'"
        )
    return bn_mode if has_bn else "interpolate"


@dataclass(frozen=True)
class ExampleTerms:
    """One network's evaluation with its per-example terms (see :func:`evaluate_examples`)."""

    result: EvalResult
    loss: np.ndarray
    correct: np.ndarray | None


def evaluate_examples(model: nn.Module, batches: Iterable[Batch], task: Task) -> ExampleTerms:
    """:func:`~transferlens.analysis.evalcache.evaluate_batches` keeping each example's
    loss (float64) and, for ``multiclass``, its 0/1 correctness.

    The sums are taken exactly as :func:`transferlens.evaluation.evaluate` takes them
    (float64 per batch on the device, the same forward pass), so ``result`` is the
    number ``evaluate_batches`` gives, bit for bit.
    """
    # The same forward as evaluate (input memory format included): the curve's
    # numbers must not move because the per-example terms are kept.
    from transferlens.evaluation import logit_batches

    check_task(task)
    device = model_device(model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct_sum = torch.zeros((), dtype=torch.int64, device=device)
    losses, corrects, scores, labels = [], [], [], []
    with evaluation_mode([model]), torch.inference_mode():
        for logits, targets in logit_batches(model, batches, device, False):  # type: ignore[arg-type]
            per_example = task_loss(logits, targets, task, reduction="none").double()
            loss_sum += per_example.sum()
            losses.append(per_example.cpu())
            if task == "multiclass":
                right = correct_predictions(logits, targets)
                correct_sum += right.sum()
                corrects.append(right.cpu())
            else:
                scores.append(logits.cpu())
                labels.append(targets.float().cpu())
    loss = torch.cat(losses).numpy() if losses else np.zeros(0)
    n = len(loss)
    if n == 0:
        raise UserInputError("the data loader yielded no examples")
    if task == "multiclass":
        correct = torch.cat(corrects).to(torch.float64).numpy()
        metric = int(correct_sum.item()) / n
    else:
        correct, metric = None, mean_roc_auc(torch.cat(scores), torch.cat(labels))
    return ExampleTerms(EvalResult(float(loss_sum.item()) / n, metric, n), loss, correct)


def interpolation_curve(
    model_a: nn.Module,
    model_b: StateLike,
    loader: Iterable,
    task: Task,
    *,
    lams: Sequence[float] | None = None,
    bn_mode: str = "auto",
    train_loader: Iterable | None = None,
    bn_batches: int | None = None,
    device: str | torch.device | None = None,
    repair: bool = False,
) -> InterpolationResult:
    """Loss and metric of ``(1 - lam) a + lam b`` on the whole of ``loader``, for each lambda.

    ``model_b`` may be a module or a state dict of ``model_a``'s architecture; the
    inputs are not modified. The evaluation batches (and, for ``bn_mode`` recompute
    or ``repair``, the first ``bn_batches`` training batches, all by default) are read
    once and re-used for every lambda; one working copy of ``model_a`` receives each
    interpolated state. ``lams`` default to :func:`lambda_grid` ``(11)``. Both loaders
    must keep their order (:func:`~transferlens.analysis.checks.check_ordered_loader`):
    the per-example terms of every lambda pair the same examples.

    ``repair``: REPAIR each point strictly between the ends on the training batches
    (``model_b`` a module, aligned to ``model_a``). The ends are ``a`` and ``b``
    themselves, whose statistics are their own targets, so they are left as they are.
    On a network with BatchNorm REPAIR is the re-estimation ``bn_mode`` recompute
    already does: ``repair`` then changes nothing.
    """
    check_task(task)
    if not isinstance(model_a, nn.Module):
        raise UserInputError("model_a must be an nn.Module (it provides the architecture)")
    check_ordered_loader(loader, "interpolation")
    if train_loader is not None:
        check_ordered_loader(train_loader, "interpolation (training batches)")
    if repair and (not isinstance(model_b, nn.Module) or train_loader is None):
        raise UserInputError("interpolation: repair needs model_b as a module and a train_loader")
    settings = {"lams": None if lams is None else list(lams), "bn_mode": bn_mode,
                "bn_batches": bn_batches, "repair": bool(repair)}  # fmt: skip
    lams = lambda_grid(11) if lams is None else [float(lam) for lam in lams]
    if not lams:
        raise UserInputError("lams is empty")
    device = analysis_device(device, model_a)
    working = copy.deepcopy(model_a).to(device).eval()
    # Cloned: the working copy's own tensors change with every load_state_dict.
    state_a = {key: value.detach().clone() for key, value in working.state_dict().items()}
    state_b = {key: value.detach().to(device) for key, value in as_state_dict(model_b).items()}
    check_same_layout(state_a, state_b)
    mode = _resolve_bn_mode(working, bn_mode, train_loader)

    batches = prepare_batches(loader, device)
    train_batches = None
    if mode == "recompute" or repair:
        train_batches = prepare_batches(train_loader, device, max_batches=bn_batches)
    # BatchNorm statistics re-estimated at every point already are REPAIR's correction.
    repairing = repair and mode != "recompute"
    points, endpoints = [], None
    for lam in lams:
        working.load_state_dict(interpolate_state_dicts(state_a, state_b, lam))
        if mode == "recompute":
            recompute_batchnorm(working, train_batches)
        evaluated = working
        if repairing and 0.0 < lam < 1.0:
            if endpoints is None:  # the end models' statistics: once per pair, not per lam
                endpoints = _repair_endpoints(model_a, model_b, working, train_batches, device)
            evaluated = _repaired(model_a, model_b, working, train_batches, lam, device, endpoints)
        points.append(evaluate_examples(evaluated, batches, task))
    return InterpolationResult(
        tuple(lams),
        tuple(point.result.loss for point in points),
        tuple(point.result.metric for point in points),
        mode,
        settings,
        example_loss=np.stack([point.loss for point in points]),
        example_correct=None if task != "multiclass" else np.stack([p.correct for p in points]),
    )


def _repair_endpoints(
    model_a: nn.Module,
    model_b: nn.Module,
    working: nn.Module,
    train_batches: Iterable,
    device: torch.device,
) -> object | None:
    """:func:`~transferlens.analysis.unit_repair.repair_endpoints` of the pair (None for a
    network with BatchNorm, whose REPAIR re-estimates BatchNorm instead)."""
    # Imported here: unit_repair imports this module (recompute_batchnorm).
    from transferlens.analysis.unit_repair import repair_endpoints

    if batchnorm_layers(working):
        return None
    return repair_endpoints(model_a, model_b, train_batches, device=device)


def _repaired(
    model_a: nn.Module,
    model_b: nn.Module,
    interpolated: nn.Module,
    train_batches: Iterable,
    lam: float,
    device: torch.device,
    endpoints: object | None = None,
) -> nn.Module:
    from transferlens.analysis.unit_repair import repair_details

    return repair_details(
        model_a, model_b, interpolated, train_batches, lam, device=device, endpoints=endpoints
    ).model


def barrier(curve: InterpolationResult | pd.DataFrame) -> tuple[float, float]:
    """``(loss_barrier, metric_barrier)`` of an interpolation curve.

    ``curve``: an :class:`InterpolationResult` or a frame with columns ``lam, loss, metric``.

    The line between the ends is evaluated from the nearer end, ``v(0) + lam (v(1) - v(0))``
    or ``v(1) - (1 - lam) (v(1) - v(0))`` (as :func:`torch.lerp` does), so that it passes
    exactly through both ends and a flat curve has a barrier of exactly 0.
    The curve must contain ``lam = 0`` and ``lam = 1``; NaN values give NaN.
    """
    if isinstance(curve, InterpolationResult):
        curve = curve.to_frame()
    missing = [column for column in ("lam", "loss", "metric") if column not in curve.columns]
    if missing:
        raise UserInputError(f"the interpolation curve lacks the column {missing[0]!r}")
    ordered = curve.sort_values("lam", kind="stable")
    lam = ordered["lam"].to_numpy(dtype=np.float64)
    if len(lam) == 0 or lam[0] != 0.0 or lam[-1] != 1.0:
        raise UserInputError("the interpolation curve must include lam = 0 and lam = 1")

    loss = ordered["loss"].to_numpy(dtype=np.float64)
    metric = ordered["metric"].to_numpy(dtype=np.float64)
    return float(rise_above_line(lam, loss)), float(rise_above_line(lam, -metric))


def rise_above_line(lam: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``max_j values[..., j] - line(lam_j)`` over the last axis, the line between the
    first and last value evaluated from the nearer end (see :func:`barrier`); ``lam``
    sorted, from 0 to 1. Rows of ``values`` are independent curves."""
    first, last = values[..., :1], values[..., -1:]
    step = last - first
    line = np.where(lam < 0.5, first + lam * step, last - (1.0 - lam) * step)
    return np.max(values - line, axis=-1)
