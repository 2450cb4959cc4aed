"""Intervals of a run's own numbers over the examples they are measured on (runs.csv).

Both are the project's seeded percentile bootstrap
(:func:`transferlens.analysis.stats.bootstrap_interval`, :data:`RESAMPLES` resamples
drawn from :data:`SEED`) over the examples of evaluations the loop runs anyway: what
the metric needs of each example is kept from the forward pass
(:class:`~transferlens.metrics.ExampleOutcomes`) and resampled, never recomputed.

* ``final_test_metric_low/high``: the metric of the final epoch E on each resample of
  the test examples (accuracy: the mean of the resampled correctness; mean ROC-AUC:
  recomputed on the resampled rows).
* ``optimization_speed_low/high``: the speed is the mean over epochs 1..E of the metric
  on the same fixed train-eval subset, so one resample of that subset's examples applies
  to every epoch: replicate_q = (1/E) sum_e metric_e(resample q).

  - A metric that is a mean of per-example terms (accuracy: ``ExampleOutcomes.terms``)
    needs no per-epoch bootstrap. With t_ej the term of example j at epoch e and
    S_j = sum_e t_ej, (1/E) sum_e (1/m) sum_k t_{e,i_qk} = (1/(m E)) sum_k S_{i_qk}:
    the resampled speed is the resampled mean of S / E. The loop adds each epoch's terms
    to S (``<run>/bootstrap/train_eval_sums_<e>.npy``, n float64, written before the
    epoch's record; only the newest and the resume state's epoch are kept, so a resumed
    run restarts from the sums of the epoch it resumes) and :func:`speed_from_sums`
    bootstraps once at the end. The terms are 0/1, so S is exact and the numerator an
    exact integer: one rounding, where averaging E per-epoch replicates rounds E + 1
    times; the two agree to ~1e-16, not bit for bit.
  - Other metrics (mean ROC-AUC is not a mean over examples) keep each epoch's R
    replicates (``<run>/bootstrap/train_eval_<e>.npy``, R float64 = 8 KB), averaged at
    the end by :func:`speed_replicates`. That is a bootstrap per epoch: about 0.2 s at
    5k examples x 5 labels and 2 s at 50k x 5 on a contended CPU core (load 6 on 2
    cores; it grows as n x R x labels). At 50k that is over 1 s per epoch: the knob
    is the spec's ``train_eval_size`` (the subset the speed is measured on; the
    studies use 500-2000). A run resumed from an epoch without sums (trained before
    them) continues this way, so its earlier epochs still count.
* ``best_test_metric`` has no interval: it is the largest of E + 1 test metrics, the
  epoch chosen by the same test examples it is measured on. Resampling the examples and
  taking the maximum again bootstraps a non-smooth statistic (the bootstrap of a
  maximum is inconsistent) and carries the selection's optimism into the interval;
  ``final_test_metric``, whose epoch is fixed in advance, is the number to compare.

Every run resamples with the same seed, so runs on the same test set (P-T and RI-T of
one target) share their resamples. Runs trained before these files existed, or resumed
from such a run, have no interval: None (an empty cell), never an error.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from transferlens.analysis.stats import bootstrap_interval, percentile_interval
from transferlens.io import atomic_write_bytes
from transferlens.metrics import ExampleOutcomes, resampled_task_metric
from transferlens.train.run_dir import BOOTSTRAP_DIR, example_sums_path, replicates_path

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
TEST, TRAIN_EVAL = "test", "train_eval"
INTERVAL_FIELDS = (
    "final_test_metric_low",
    "final_test_metric_high",
    "optimization_speed_low",
    "optimization_speed_high",
)


def metric_replicates(
    outcomes: ExampleOutcomes, n_resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """``[n_resamples]``: the task metric of each bootstrap resample of the examples.

    The resamples are exactly those :func:`bootstrap_interval` draws for ``seed`` and
    ``n = outcomes.n`` (row q of :func:`~transferlens.analysis.stats.resample_indices`),
    taken from the chunks it hands a vectorised statistic (it draws them in chunks that
    bound memory, and exposes them only that way).
    """
    replicates: list[np.ndarray] = []

    def statistic(indices: np.ndarray) -> np.ndarray:
        values = resampled_task_metric(outcomes, indices)
        replicates.append(values)
        return values

    bootstrap_interval(statistic, n_resamples, CONFIDENCE, seed, n=outcomes.n, vectorized=True)
    return np.concatenate(replicates)


def mean_replicates(
    terms: np.ndarray, divisor: float, n_resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """``[n_resamples]``: sum_k terms[i_qk] / (m divisor) for each bootstrap resample q
    (the resamples of :func:`metric_replicates`; m = len(terms)). The sum is taken first
    and divided once: exact for integer-valued terms."""
    terms = np.asarray(terms, dtype=np.float64)
    replicates: list[np.ndarray] = []

    def statistic(indices: np.ndarray) -> np.ndarray:
        values = terms[indices].sum(axis=1) / (indices.shape[1] * divisor)
        replicates.append(values)
        return values

    bootstrap_interval(statistic, n_resamples, CONFIDENCE, seed, n=terms.size, vectorized=True)
    return np.concatenate(replicates)


def speed_from_sums(sums: np.ndarray, epochs: int) -> np.ndarray:
    """The speed's replicates from the per-example sums S over ``epochs`` epochs: the
    resampled mean of S / E (see the module docstring for the identity)."""
    return mean_replicates(sums, float(epochs))


def added_sums(sums: np.ndarray | None, examples: ExampleOutcomes) -> np.ndarray | None:
    """The running sums S with this epoch's terms added (the terms themselves when
    ``sums`` is None: the first trained epoch); None when the metric is no mean of
    per-example terms (then the epoch keeps its replicates) or the sizes disagree."""
    terms = examples.terms
    if terms is None:
        return None
    if sums is None:
        return terms.copy()
    return sums + terms if sums.shape == terms.shape else None


def save_sums(run_dir: Path, epoch: int, sums: np.ndarray) -> None:
    """Write the per-example sums through ``epoch`` (float64 ``.npy``) atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(sums, dtype=np.float64), allow_pickle=False)
    atomic_write_bytes(example_sums_path(run_dir, epoch), buffer.getvalue())


def read_sums(run_dir: Path, epoch: int) -> np.ndarray | None:
    """The per-example sums through ``epoch``, or None when the run did not keep them."""
    path = example_sums_path(run_dir, epoch)
    return np.load(path, allow_pickle=False) if path.is_file() else None


def prune_sums(run_dir: Path, keep: Collection[int]) -> None:
    """Delete the sums files of every epoch outside ``keep`` (a resume needs only its
    own epoch's; the newest is the end's)."""
    wanted = {example_sums_path(run_dir, epoch).name for epoch in keep}
    for path in (Path(run_dir) / BOOTSTRAP_DIR).glob("train_eval_sums_*.npy"):
        if path.name not in wanted:
            path.unlink(missing_ok=True)


def save_replicates(run_dir: Path, split: str, epoch: int, values: np.ndarray) -> None:
    """Write an epoch's replicates (float64 ``.npy``) atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype=np.float64), allow_pickle=False)
    atomic_write_bytes(replicates_path(run_dir, split, epoch), buffer.getvalue())


def read_replicates(run_dir: Path, split: str, epoch: int) -> np.ndarray | None:
    """An epoch's replicates, or None when the run did not keep them."""
    path = replicates_path(run_dir, split, epoch)
    if not path.is_file():
        return None
    return np.load(path, allow_pickle=False)


def _bounds(replicates: np.ndarray | None) -> tuple[float | None, float | None]:
    """Percentile interval, None for each bound that is missing or NaN (JSON has no NaN)."""
    if replicates is None or replicates.size == 0:
        return None, None
    low, high = percentile_interval(replicates, CONFIDENCE)
    return (
        None if math.isnan(low) else low,
        None if math.isnan(high) else high,
    )


def speed_replicates(run_dir: Path, epochs: Sequence[int]) -> np.ndarray | None:
    """Mean over ``epochs`` of each epoch's train-eval replicates (the same resamples of
    the same examples); None when an epoch lacks them or they disagree in count."""
    if not epochs:
        return None
    per_epoch = [read_replicates(run_dir, TRAIN_EVAL, epoch) for epoch in epochs]
    if any(values is None for values in per_epoch):
        return None
    if len({values.shape for values in per_epoch}) != 1:
        return None
    return np.mean(np.stack(per_epoch), axis=0)


def run_intervals(
    run_dir: Path, final_epoch: int, trained_epochs: Sequence[int]
) -> dict[str, float | None]:
    """:data:`INTERVAL_FIELDS` of a finished run from its ``bootstrap/`` files: the final
    test metric's interval and, over ``trained_epochs`` (1..E), the speed's (from the
    sums through E when the run kept them, else from each epoch's replicates)."""
    test_low, test_high = _bounds(read_replicates(run_dir, TEST, final_epoch))
    epochs = list(trained_epochs)
    sums = read_sums(run_dir, epochs[-1]) if epochs else None
    speed = speed_from_sums(sums, len(epochs)) if sums is not None and sums.size else None
    if speed is None:  # a non-linear metric, or a run that kept per-epoch replicates
        speed = speed_replicates(run_dir, epochs)
    speed_low, speed_high = _bounds(speed)
    return dict(zip(INTERVAL_FIELDS, (test_low, test_high, speed_low, speed_high), strict=True))
