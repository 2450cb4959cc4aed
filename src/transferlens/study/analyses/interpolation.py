"""Study adapter of linear interpolation: the barrier of every seed pair, for each
alignment setting, its intervals, and one curve per pair kind (its first seed pair).

For every target and pair kind (PT-PT, PT-RIT, RIT-RIT), every seed pair ``(a, b)`` and
every ``align`` setting, ``b`` is aligned to ``a`` (``none``: as trained; ``weights`` /
``activations``: :func:`~transferlens.analysis.unit_alignment.alignment` on the target's
training data) and the curve between them is evaluated; with ``repair: true`` every
aligned setting also gets a REPAIRed curve (same alignment). Tables:

* ``interpolation``: the curve of each pair kind's first seed pair (the paper draws
  one), per align / repair, with each point's interval over the test set
  (``loss_low/high``, ``metric_low/high``: the barriers' resamples);
* ``interpolation_pairs``: every seed pair's curve with those intervals
  (:data:`CURVE_PAIRS_COLUMNS`);
* ``barriers_pairs``: each seed pair's barriers with their interval over the test set;
* ``barriers``: per target, pair kind, align, repair: the mean over seed pairs, the
  test-set interval of that mean (the same resamples for every seed pair, averaged),
  the interval across seed pairs (:func:`~transferlens.analysis.seed_stats.pair_summary`)
  and ``n_pairs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from transferlens.study.analyses.context import StudyContext, concat, model_pairs
from transferlens.study.analyses.settings import InterpolationSettings

if TYPE_CHECKING:
    from transferlens.analysis.interpolation import InterpolationResult

PAIR_KINDS = ("PT-PT", "PT-RIT", "RIT-RIT")
BARRIERS = ("loss_barrier", "metric_barrier")
CURVE_INTERVALS = ("loss_low", "loss_high", "metric_low", "metric_high")
CURVE_PAIRS_COLUMNS = (
    "target", "pair", "align", "repair", "first_seed", "second_seed", "lam", "loss", "metric",
    *CURVE_INTERVALS,
)  # fmt: skip
SEED = 0  # the bootstrap's seed: every seed pair of a target draws the same resamples


def curve_settings(settings: InterpolationSettings) -> list[tuple[str, bool]]:
    """``[(align, repair), ...]``: each align setting unrepaired, then (``repair``) each
    aligned one repaired."""
    plain = [(method, False) for method in settings.align]
    repaired = [(method, True) for method in settings.align if method != "none"]
    return plain + (repaired if settings.repair else [])


def _aligned(
    model_a: nn.Module, model_b: nn.Module, method: str, train_batches: object
) -> nn.Module:
    from transferlens.analysis.unit_alignment import alignment

    if method == "none":
        return model_b
    # Weight matching draws its group order from its own seed; the global RNG stays.
    with torch.random.fork_rng(devices=[]):
        return alignment(model_a, model_b, train_batches, method, seed=SEED).model


def _seed(member: object) -> int:
    return int(member.meta.seed)  # type: ignore[attr-defined]


def analyse_interpolation(
    context: StudyContext,
    settings: InterpolationSettings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """``interpolation``, ``interpolation_pairs``, ``barriers`` and ``barriers_pairs``
    (module docstring); ``progress`` hears ``real: pair 2/3 PT-RIT``."""
    from transferlens.analysis import barrier, interpolation_curve, lambda_grid
    from transferlens.analysis.barrier_stats import barrier_replicates
    from transferlens.analysis.checks import check_ordered_loader
    from transferlens.analysis.evalcache import prepare_batches
    from transferlens.analysis.stats import resample_indices

    chosen = curve_settings(settings)
    curves, curve_pairs, pair_rows, summaries = [], [], [], []
    for target, entry in context.targets.items():
        loader = context.test_loader(target, settings.max_examples)
        train_loader = context.train_eval_loader(target)
        check_ordered_loader(loader, "interpolation")
        check_ordered_loader(train_loader, "interpolation (training data)")
        # Read once for every seed pair and setting (interpolation_curve re-uses them).
        batches, train_batches = prepare_batches(loader), prepare_batches(train_loader)
        n = batches.n_examples
        indices = (
            resample_indices(n, settings.n_bootstrap, SEED)
            if settings.n_bootstrap
            else np.zeros((0, n), dtype=np.int64)
        )
        pairs = model_pairs(entry, PAIR_KINDS)
        for number, (name, combos) in enumerate(pairs.items(), 1):
            if progress is not None:
                progress(f"{target}: pair {number}/{len(pairs)} {name}")
            replicates: dict[tuple[str, bool], list[np.ndarray]] = {key: [] for key in chosen}
            for index, (first, second) in enumerate(combos):
                model_a, model_b = context.model(first), context.model(second)
                aligned = {
                    method: _aligned(model_a, model_b, method, train_batches)
                    for method in settings.align
                }
                for method, repaired in chosen:
                    result = interpolation_curve(
                        model_a,
                        aligned[method],
                        batches,
                        context.task(target),
                        lams=lambda_grid(settings.points),
                        train_loader=train_batches,
                        repair=repaired,
                    )
                    loss_barrier, metric_barrier = barrier(result)
                    resampled = barrier_replicates(result, indices)
                    replicates[(method, repaired)].append(resampled)
                    (loss_low, metric_low), (loss_high, metric_high) = _interval(resampled)
                    pair_rows.append(
                        {
                            "target": target,
                            "pair": name,
                            "align": method,
                            "repair": repaired,
                            "first_seed": _seed(first),
                            "second_seed": _seed(second),
                            "loss_barrier": loss_barrier,
                            "metric_barrier": metric_barrier,
                            "loss_barrier_low": loss_low,
                            "loss_barrier_high": loss_high,
                            "metric_barrier_low": metric_low,
                            "metric_barrier_high": metric_high,
                        }
                    )
                    curve = with_curve_intervals(result, indices).assign(
                        target=target,
                        pair=name,
                        align=method,
                        repair=repaired,
                        first_seed=_seed(first),
                        second_seed=_seed(second),
                    )
                    curve_pairs.append(curve[list(CURVE_PAIRS_COLUMNS)])
                    if index == 0:  # the first seed pair: one curve per pair, as in the paper
                        columns = ["lam", "loss", "metric", "target", "pair", "align", "repair"]
                        curves.append(curve[[*columns, *CURVE_INTERVALS]])
            for (method, repaired), kept in replicates.items():
                mean = np.mean(kept, axis=0)
                (loss_low, metric_low), (loss_high, metric_high) = _interval(mean)
                summaries.append(
                    {
                        "target": target,
                        "pair": name,
                        "align": method,
                        "repair": repaired,
                        "loss_barrier_low": loss_low,
                        "loss_barrier_high": loss_high,
                        "metric_barrier_low": metric_low,
                        "metric_barrier_high": metric_high,
                    }
                )
    barriers_pairs = pd.DataFrame(pair_rows)
    return {
        "interpolation": concat(curves),
        "interpolation_pairs": concat(curve_pairs),
        "barriers": _barriers(barriers_pairs, pd.DataFrame(summaries)),
        "barriers_pairs": barriers_pairs,
    }


def with_curve_intervals(result: InterpolationResult, indices: np.ndarray) -> pd.DataFrame:
    """``result.to_frame()`` (lam, loss, metric) with each point's percentile interval
    over the resamples ``indices`` (:data:`CURVE_INTERVALS`; NaN without resamples, and
    for a multilabel metric)."""
    from transferlens.analysis.barrier_stats import curve_replicates
    from transferlens.analysis.stats import percentile_interval

    frame = result.to_frame()
    if indices.shape[0] == 0:
        return frame.assign(**{column: math.nan for column in CURVE_INTERVALS})
    low, high = percentile_interval(curve_replicates(result, indices))
    return frame.assign(
        loss_low=low[:, 0], loss_high=high[:, 0], metric_low=low[:, 1], metric_high=high[:, 1]
    )


def _interval(replicates: np.ndarray) -> tuple:
    """``((loss_low, metric_low), (loss_high, metric_high))`` of ``[r, 2]`` replicates
    (NaN without resamples)."""
    from transferlens.analysis.stats import percentile_interval

    if replicates.shape[0] == 0:
        return (math.nan, math.nan), (math.nan, math.nan)
    low, high = percentile_interval(replicates)
    return (float(low[0]), float(low[1])), (float(high[0]), float(high[1]))


def _barriers(pairs: pd.DataFrame, test_intervals: pd.DataFrame) -> pd.DataFrame:
    """The mean over seed pairs of each barrier, then its test-set interval, its interval
    across seed pairs and ``n_pairs`` (the columns of ``barriers.csv``, in order)."""
    if pairs.empty:
        return pd.DataFrame()
    from transferlens.analysis.seed_stats import pair_summary

    keys = ["target", "pair", "align", "repair"]
    loss = pair_summary(pairs, "loss_barrier", by=keys)
    metric = pair_summary(pairs, "metric_barrier", by=keys).drop(columns="n_pairs")
    table = loss.merge(metric, on=keys, sort=False).merge(test_intervals, on=keys, sort=False)
    columns = ["target", "pair", *BARRIERS, "align", "repair"]
    columns += [f"{value}_{side}" for value in BARRIERS for side in ("low", "high")]
    columns += [f"{value}_seeds_{side}" for value in BARRIERS for side in ("low", "high")]
    return table[[*columns, "n_pairs"]]
