"""The speed interval of an accuracy-like metric from per-example sums over epochs.

Brute force is the definition: one resample of the train-eval examples for every epoch,
the metric of each epoch on it, averaged over the epochs. The sums path bootstraps the
per-example sums S_j = sum_e t_ej once; the two agree to float rounding (~1e-16).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from transferlens.analysis.stats import resample_indices
from transferlens.data import DataSplits, register_dataset
from transferlens.data.tensor_dataset import TensorImageDataset
from transferlens.metrics import ExampleOutcomes, mean_roc_auc, resampled_task_metric
from transferlens.train import TrainSpec, train
from transferlens.train.intervals import (
    INTERVAL_FIELDS,
    RESAMPLES,
    SEED,
    TEST,
    TRAIN_EVAL,
    added_sums,
    metric_replicates,
    prune_sums,
    read_sums,
    run_intervals,
    save_replicates,
    save_sums,
    speed_from_sums,
    speed_replicates,
)
from transferlens.train.run_dir import BOOTSTRAP_DIR, example_sums_path


def _epochs(n: int, count: int, seed: int) -> list[ExampleOutcomes]:
    rng = np.random.default_rng(seed)
    return [
        ExampleOutcomes("multiclass", correct=rng.random(n) < 0.3 + 0.15 * epoch)
        for epoch in range(count)
    ]


def _summed(epochs: list[ExampleOutcomes]) -> np.ndarray:
    sums = None
    for outcomes in epochs:
        sums = added_sums(sums, outcomes)
    return sums


def test_the_speed_from_sums_is_the_mean_over_epochs_of_each_resample() -> None:
    epochs = _epochs(40, 4, seed=1)
    rows = resample_indices(40, RESAMPLES, SEED)
    brute = np.array([np.mean([o.correct[row].mean() for o in epochs]) for row in rows])
    fast = speed_from_sums(_summed(epochs), len(epochs))
    # Not bit for bit: the sums path divides one exact integer once, the brute force
    # rounds each epoch's mean and then their mean.
    np.testing.assert_allclose(fast, brute, rtol=0, atol=1e-12)
    # The counts are exact: S_j is the number of epochs example j was right in.
    np.testing.assert_array_equal(_summed(epochs), sum(o.correct.astype(int) for o in epochs))


def test_run_intervals_reads_the_sums_and_matches_the_per_epoch_replicates(tmp_path) -> None:
    epochs = _epochs(50, 3, seed=2)
    sums_dir, replicates_dir = tmp_path / "sums", tmp_path / "replicates"
    for epoch, outcomes in enumerate(epochs, start=1):
        save_replicates(replicates_dir, TRAIN_EVAL, epoch, metric_replicates(outcomes))
    save_sums(sums_dir, 3, _summed(epochs))
    test = metric_replicates(_epochs(30, 1, seed=9)[0])
    for folder in (sums_dir, replicates_dir):
        save_replicates(folder, TEST, 3, test)
    np.testing.assert_allclose(
        speed_from_sums(read_sums(sums_dir, 3), 3),
        speed_replicates(replicates_dir, [1, 2, 3]),
        rtol=0,
        atol=1e-15,
    )
    fast, slow = run_intervals(sums_dir, 3, [1, 2, 3]), run_intervals(replicates_dir, 3, [1, 2, 3])
    for name in INTERVAL_FIELDS:
        assert fast[name] == pytest.approx(slow[name], abs=1e-15), name


def test_sums_need_per_example_terms_of_the_same_examples() -> None:
    labels = np.array([[True], [False]])
    roc = ExampleOutcomes("multilabel", scores=np.array([[0.2], [0.1]]), labels=labels)
    assert roc.terms is None and added_sums(None, roc) is None
    assert added_sums(np.zeros(3), _epochs(4, 1, seed=0)[0]) is None


def test_pruning_keeps_only_the_named_epochs(tmp_path) -> None:
    for epoch in (1, 2, 3, 4):
        save_sums(tmp_path, epoch, np.full(5, float(epoch)))
    prune_sums(tmp_path, {2, 4})
    names = sorted(path.name for path in (tmp_path / BOOTSTRAP_DIR).iterdir())
    assert names == [example_sums_path(tmp_path, e).name for e in (2, 4)]
    np.testing.assert_array_equal(read_sums(tmp_path, 4), np.full(5, 4.0))
    assert read_sums(tmp_path, 1) is None


def test_roc_auc_of_many_resamples_with_ties_is_the_rank_formula_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    truth = rng.random((300, 3)) < 0.3
    scores = np.round(truth * 0.7 + rng.normal(size=(300, 3)), 1)
    scores[:, 2] = truth[:, 2] + rng.normal(size=300)  # one label without ties
    outcomes = ExampleOutcomes("multilabel", scores=scores, labels=truth)
    rows = resample_indices(300, 40, seed=2)
    expected = [mean_roc_auc(torch.as_tensor(scores[r]), torch.as_tensor(truth[r])) for r in rows]
    np.testing.assert_array_equal(resampled_task_metric(outcomes, rows), expected)


# --- a resumed run -------------------------------------------------------------------------


@register_dataset("tiny_test_interval_sums")
def _tiny(spec) -> DataSplits:
    """12 px images whose class brightens one quadrant."""
    generator = torch.Generator().manual_seed(spec.split_seed)

    def split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(40, 120, (count, 3, 12, 12), generator=generator)
        targets = torch.arange(count) % 4
        for index in range(count):
            row, col = divmod(int(targets[index]), 2)
            images[index, 0, row * 6 : row * 6 + 6, col * 6 : col * 6 + 6] += 120
        return images.to(torch.uint8), targets

    mean, std = (0.4, 0.4, 0.4), (0.25, 0.25, 0.25)
    train_set = TensorImageDataset(*split(64), mean, std)
    return DataSplits(
        train=train_set,
        test=TensorImageDataset(*split(40), mean, std),
        num_classes=4,
        task="multiclass",
        image_size=12,
        train_eval=train_set,
    )


def _spec() -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "model": "fixup_resnet10",
            "model_kwargs": {"stem": "cifar", "width": 4},
            "data": {"name": "tiny_test_interval_sums"},
            "epochs": 4,
            "checkpoint_every": 2,
            "batch_size": 16,
            "lr": 0.05,
            "eval_batch_size": 16,
            "device": "cpu",
            "seed": 1,
            "train_eval_size": 48,
        }
    )


class _Crash(RuntimeError):
    pass


def _crash_after(epoch: int):
    def on_epoch(done: int, record) -> None:
        if done == epoch:
            raise _Crash(f"stopped after epoch {epoch}")

    return on_epoch


def _intervals(run) -> dict:
    stored = json.loads((run / "complete.json").read_text())
    return {name: stored[name] for name in INTERVAL_FIELDS}


# Resumes from epoch 0; from epoch 2, with the sums of epoch 3 on disk (not to be used).
@pytest.mark.parametrize("crash_after", [1, 3])
def test_a_resumed_run_has_the_intervals_of_an_uninterrupted_one(tmp_path, crash_after) -> None:
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(_spec(), whole, progress=False)
    with pytest.raises(_Crash):
        train(_spec(), resumed, progress=False, on_epoch=_crash_after(crash_after))
    train(_spec(), resumed, progress=False)
    assert _intervals(resumed) == _intervals(whole)
    assert all(value is not None for value in _intervals(whole).values())
    for run in (whole, resumed):
        sums = sorted(path.name for path in (run / BOOTSTRAP_DIR).glob("train_eval_sums_*"))
        assert sums == ["train_eval_sums_0004.npy"]


def test_a_run_resumed_from_an_epoch_without_sums_has_no_speed_interval(tmp_path) -> None:
    run = tmp_path / "run"
    with pytest.raises(_Crash):
        train(_spec(), run, progress=False, on_epoch=_crash_after(3))
    example_sums_path(run, 2).unlink()  # as if trained before the sums were kept
    summary = train(_spec(), run, progress=False)
    assert summary.optimization_speed is not None
    assert summary.optimization_speed_low is None and summary.optimization_speed_high is None
    assert summary.final_test_metric_low <= summary.final_test_metric
