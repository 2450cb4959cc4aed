"""runs.csv's intervals over examples: final test metric and optimisation speed.

Brute force is the definition: draw the bootstrap's index rows, take the metric of the
resampled examples (accuracy: mean correctness; mean ROC-AUC: recomputed on the rows)
and, for the speed, average it over epochs with the same rows for every epoch.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from conftest import TINY_STUDY
from transferlens.analysis.stats import bootstrap_interval, resample_indices
from transferlens.data import DataSplits, register_dataset
from transferlens.data.tensor_dataset import TensorImageDataset
from transferlens.evaluation import ShardSampler, evaluate
from transferlens.io import append_jsonl, atomic_write_json
from transferlens.metrics import (
    ExampleOutcomes,
    mean_roc_auc,
    resampled_task_metric,
)
from transferlens.study.loading import parse_study
from transferlens.study.plan import plan_study
from transferlens.study.runs_table import INTERVAL_COLUMNS, write_runs_table
from transferlens.study.store import StudyStore
from transferlens.train import TrainSpec, load_model, train
from transferlens.train.intervals import (
    INTERVAL_FIELDS,
    RESAMPLES,
    SEED,
    TEST,
    TRAIN_EVAL,
    metric_replicates,
    run_intervals,
    save_replicates,
)
from transferlens.train.loaders import build_loaders
from transferlens.train.run_dir import BOOTSTRAP_DIR, replicates_path
from transferlens.train.summary import RunSummary

# --- brute force -----------------------------------------------------------------------


def brute_metric(outcomes: ExampleOutcomes, rows: np.ndarray) -> float:
    """The task metric of the examples ``rows`` (with repeats), from the definition."""
    if outcomes.task == "multiclass":
        return float(torch.as_tensor(outcomes.correct[rows]).double().mean())
    return mean_roc_auc(
        torch.as_tensor(outcomes.scores[rows]), torch.as_tensor(outcomes.labels[rows])
    )


def multiclass_outcomes(n: int, seed: int) -> ExampleOutcomes:
    rng = np.random.default_rng(seed)
    return ExampleOutcomes("multiclass", correct=rng.random(n) < 0.7)


def multilabel_outcomes(n: int, seed: int, labels: int = 3) -> ExampleOutcomes:
    rng = np.random.default_rng(seed)
    truth = rng.random((n, labels)) < 0.35
    # Rounded scores: many ties, between and within the classes.
    scores = np.round(truth * 0.8 + rng.normal(size=(n, labels)), 1).astype(np.float32)
    return ExampleOutcomes("multilabel", scores=scores, labels=truth)


@pytest.mark.parametrize("make", [multiclass_outcomes, multilabel_outcomes])
def test_resampled_metric_is_the_metric_of_the_resampled_rows_bit_for_bit(make) -> None:
    outcomes = make(40, seed=1)
    rows = resample_indices(40, 30, seed=4)
    expected = np.array([brute_metric(outcomes, row) for row in rows])
    np.testing.assert_array_equal(resampled_task_metric(outcomes, rows), expected)


def test_a_resample_with_one_class_of_a_label_leaves_that_label_out() -> None:
    scores = np.array([[0.1, 0.9], [0.4, 0.2], [0.8, 0.5]], dtype=np.float32)
    labels = np.array([[False, True], [True, False], [True, True]])
    outcomes = ExampleOutcomes("multilabel", scores=scores, labels=labels)
    rows = np.array([[1, 2, 1], [0, 1, 2], [2, 2, 2]])  # label 0 one-class; all; both one-class
    got = resampled_task_metric(outcomes, rows)
    assert got[0] == brute_metric(outcomes, rows[0]) == 1.0  # label 1 alone: 0.5 > 0.2
    assert got[1] == brute_metric(outcomes, rows[1])
    assert np.isnan(got[2]) and np.isnan(brute_metric(outcomes, rows[2]))


@pytest.mark.parametrize("make", [multiclass_outcomes, multilabel_outcomes])
def test_replicates_are_the_project_bootstrap_and_bracket_the_value(make) -> None:
    outcomes = make(60, seed=2)
    replicates = metric_replicates(outcomes, n_resamples=200, seed=7)
    rows = resample_indices(60, 200, seed=7)
    np.testing.assert_array_equal(replicates, [brute_metric(outcomes, row) for row in rows])
    low, high = bootstrap_interval(
        lambda row: brute_metric(outcomes, row), 200, seed=7, n=outcomes.n
    )
    assert (low, high) == tuple(np.quantile(replicates, [0.025, 0.975]))
    assert low <= brute_metric(outcomes, np.arange(60)) <= high


@pytest.mark.parametrize("make", [multiclass_outcomes, multilabel_outcomes])
def test_the_speed_interval_resamples_the_same_examples_in_every_epoch(tmp_path, make) -> None:
    epochs = [make(50, seed=10 + epoch) for epoch in range(3)]
    for epoch, outcomes in enumerate(epochs, start=1):
        save_replicates(tmp_path, TRAIN_EVAL, epoch, metric_replicates(outcomes))
    save_replicates(tmp_path, TEST, 3, metric_replicates(make(30, seed=99)))
    got = run_intervals(tmp_path, 3, [1, 2, 3])
    rows = resample_indices(50, RESAMPLES, SEED)
    speeds = [np.mean([brute_metric(o, row) for o in epochs]) for row in rows]
    low, high = np.quantile(speeds, [0.025, 0.975])
    assert got["optimization_speed_low"] == pytest.approx(low, abs=1e-12)
    assert got["optimization_speed_high"] == pytest.approx(high, abs=1e-12)
    point = np.mean([brute_metric(o, np.arange(50)) for o in epochs])
    assert got["optimization_speed_low"] <= point <= got["optimization_speed_high"]
    assert got["final_test_metric_low"] <= got["final_test_metric_high"]


def test_a_folder_without_replicates_has_no_intervals(tmp_path) -> None:
    assert run_intervals(tmp_path, 2, [1, 2]) == dict.fromkeys(INTERVAL_FIELDS)
    # Resumed from a run trained before the replicates: epoch 1 lacks them.
    save_replicates(tmp_path, TRAIN_EVAL, 2, np.zeros(RESAMPLES))
    got = run_intervals(tmp_path, 2, [1, 2])
    assert got["optimization_speed_low"] is None and got["optimization_speed_high"] is None
    old = {"run_dir": "r", "epochs": 2, "final_test_loss": 1.0, "final_test_metric": 0.5}
    old.update(final_train_metric=0.6, best_test_metric=0.5, best_epoch=2, best_saved_epoch=2)
    old.update(optimization_speed=0.6, train_seconds=1.0, eval_seconds=1.0)
    old.update(images_per_second=1.0, task="multiclass", num_classes=3, device="cpu", amp=False)
    summary = RunSummary.from_json({**old, "world_size": 1})
    assert all(getattr(summary, name) is None for name in INTERVAL_FIELDS)


# --- evaluation keeps the outcomes --------------------------------------------------------


def _data(task: str, n: int = 23, seed: int = 0) -> tuple[torch.nn.Module, TensorDataset]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    if task == "multiclass":
        y = torch.randint(0, 3, (n,), generator=generator)
    else:
        y = (torch.randn(n, 3, generator=generator) > 0).float()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Linear(6, 3)
    return model, TensorDataset(x, y)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_keeping_examples_changes_no_number_and_keeps_data_set_order(task) -> None:
    model, data = _data(task)
    loader = DataLoader(data, batch_size=5, sampler=ShardSampler(data))
    plain = evaluate(model, loader, task)
    kept = evaluate(model, loader, task, keep_examples=True)
    assert (kept.loss, kept.metric, kept.n) == (plain.loss, plain.metric, plain.n)
    assert plain.examples is None and kept.examples.n == len(data)
    with torch.no_grad():
        logits = model(data.tensors[0])
    if task == "multiclass":
        expected = (logits.argmax(1) == data.tensors[1]).numpy()
        np.testing.assert_array_equal(kept.examples.correct, expected)
    else:
        np.testing.assert_allclose(kept.examples.scores, logits.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(kept.examples.labels, data.tensors[1].numpy() > 0.5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _gather_in_group(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        kept = {}
        for task in ("multiclass", "multilabel"):
            model, data = _data(task)
            loader = DataLoader(data, batch_size=4, sampler=ShardSampler(data, rank, world_size))
            examples = evaluate(model, loader, task, keep_examples=True).examples
            kept[task] = {
                key: getattr(examples, key).tolist()
                for key in ("correct", "scores", "labels")
                if getattr(examples, key) is not None
            }
        if rank == 0:
            Path(out).write_text(json.dumps(kept))
    finally:
        dist.destroy_process_group()


def test_two_processes_keep_the_outcomes_of_one_in_data_set_order(tmp_path) -> None:
    out = tmp_path / "kept.json"
    mp.spawn(_gather_in_group, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    kept = json.loads(out.read_text())
    for task in ("multiclass", "multilabel"):
        model, data = _data(task)
        single = evaluate(model, DataLoader(data, batch_size=4), task, keep_examples=True)
        for key, values in kept[task].items():
            # Exact: correctness and labels; scores to float32 rounding (other batch shapes).
            np.testing.assert_allclose(values, getattr(single.examples, key), rtol=1e-5)


# --- a training run writes them -------------------------------------------------------------


@register_dataset("tiny_test_intervals")
def _tiny(spec) -> DataSplits:
    """12 px images whose class (or label set, ``options.multilabel``) brightens quadrants."""
    multilabel = bool(spec.options.get("multilabel", False))
    generator = torch.Generator().manual_seed(spec.split_seed)

    def split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.randint(40, 120, (count, 3, 12, 12), generator=generator)
        if multilabel:
            targets = (torch.rand(count, 4, generator=generator) < 0.4).float()
        else:
            targets = torch.arange(count) % 4
        for index in range(count):
            present = (
                targets[index].nonzero().flatten().tolist() if multilabel else [targets[index]]
            )
            for label in present:
                row, col = divmod(int(label), 2)
                images[index, 0, row * 6 : row * 6 + 6, col * 6 : col * 6 + 6] += 120
        return images.to(torch.uint8), targets

    mean, std = (0.4, 0.4, 0.4), (0.25, 0.25, 0.25)
    train_set = TensorImageDataset(*split(64), mean, std)
    return DataSplits(
        train=train_set,
        test=TensorImageDataset(*split(40), mean, std),
        num_classes=4,
        task="multilabel" if multilabel else "multiclass",
        image_size=12,
        train_eval=train_set,
    )


def _spec(multilabel: bool) -> TrainSpec:
    return TrainSpec.model_validate(
        {
            "model": "fixup_resnet10",
            "model_kwargs": {"stem": "cifar", "width": 4},
            "data": {"name": "tiny_test_intervals", "options": {"multilabel": multilabel}},
            "epochs": 2,
            "batch_size": 16,
            "lr": 0.05,
            "eval_batch_size": 16,
            "device": "cpu",
            "seed": 1,
            "train_eval_size": 48,
        }
    )


@pytest.mark.parametrize("multilabel", [False, True])
def test_a_training_run_writes_the_intervals_of_its_own_evaluations(tmp_path, multilabel) -> None:
    spec = _spec(multilabel)
    summary = train(spec, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    kept = sorted(path.name for path in (run / BOOTSTRAP_DIR).iterdir())
    if multilabel:  # ROC-AUC is no mean over examples: each epoch keeps its replicates
        assert kept == ["test_0002.npy", "train_eval_0001.npy", "train_eval_0002.npy"]
    else:  # accuracy: the per-example sums through the last epoch, bootstrapped once
        assert kept == ["test_0002.npy", "train_eval_sums_0002.npy"]
    stored = json.loads((run / "complete.json").read_text())
    for name in INTERVAL_FIELDS:
        assert stored[name] == getattr(summary, name) is not None
    assert (
        summary.final_test_metric_low <= summary.final_test_metric <= summary.final_test_metric_high
    )
    assert summary.optimization_speed_low <= summary.optimization_speed
    assert summary.optimization_speed <= summary.optimization_speed_high
    # Brute force from the final model: the test examples' outcomes, resampled.
    loaders = build_loaders(spec)
    final = evaluate(load_model(run), loaders.test, spec_task(multilabel), keep_examples=True)
    low, high = bootstrap_interval(
        lambda row: brute_metric(final.examples, row), RESAMPLES, seed=SEED, n=final.examples.n
    )
    assert (summary.final_test_metric_low, summary.final_test_metric_high) == (low, high)
    if multilabel:
        epoch_one = np.load(replicates_path(run, TRAIN_EVAL, 1))
        assert epoch_one.shape == (RESAMPLES,)


def spec_task(multilabel: bool) -> str:
    return "multilabel" if multilabel else "multiclass"


# --- runs.csv -------------------------------------------------------------------------------


def test_runs_csv_adds_the_intervals_and_leaves_them_empty_for_old_runs(tmp_path) -> None:
    plan = plan_study(parse_study(TINY_STUDY, "tiny.yaml"), "tiny.yaml")
    store = StudyStore(tmp_path / "study")
    store.write_study(plan)
    source = plan.source_run.run_id
    target = plan.select(init="PT", target="real", group="main")[0].run_id
    for run_id, extra in ((source, {}), (target, dict(zip(INTERVAL_FIELDS, (0.4, 0.6, 0.5, 0.7))))):
        folder = store.run_dir(run_id)
        atomic_write_json(folder / "spec.json", {"run": run_id})
        append_jsonl(folder / "metrics.jsonl", {"epoch": 0, "test_metric": 0.5, "seconds": 0.0})
        atomic_write_json(folder / "complete.json", {"final_test_metric": 0.5, **extra})
    runs = pd.read_csv(write_runs_table(plan, store), dtype={"run_id": str}).set_index("run_id")
    assert list(runs.columns[-len(INTERVAL_COLUMNS) :]) == list(INTERVAL_COLUMNS)
    assert runs.loc[source, list(INTERVAL_COLUMNS)].isna().all()  # an old run: empty
    assert runs.loc[target, list(INTERVAL_COLUMNS)].tolist() == [0.4, 0.6, 0.5, 0.7]


# --- two torchrun processes (slow) -------------------------------------------------------


@pytest.mark.slow
def test_two_torchrun_processes_write_the_intervals_of_one(tmp_path) -> None:
    import yaml

    from transferlens.io import atomic_save_safetensors
    from transferlens.models import build_model
    from transferlens.study.execute import execute_run
    from transferlens.study.runner import execute_plan, open_study

    weights = tmp_path / "p.safetensors"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        atomic_save_safetensors(
            build_model("fixup_resnet10", 5, stem="cifar", width=4).state_dict(), weights
        )
    study = {
        **TINY_STUDY,
        "source": {"weights": str(weights)},
        "data_defaults": {**TINY_STUDY["data_defaults"], "train_size": 64, "test_size": 33},
        "training": {"pt": {"epochs": 2, "lr": 0.02, "batch_size": 16, "augment": False}},
        "pretrain_checkpoints": None,
    }
    study["training"]["rit"] = study["training"]["pt"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    plan, one = open_study(path, out=tmp_path / "one")
    for run in plan:
        assert execute_run(one, run).status == "complete"
    _, two = open_study(path, out=tmp_path / "two")
    report = execute_plan(plan, two, devices="cpu", jobs=1, nproc_per_node=2, progress=False)
    assert report.ok, report.failed
    for run in plan:
        single = json.loads((one.run_dir(run.run_id) / "complete.json").read_text())
        double = json.loads((two.run_dir(run.run_id) / "complete.json").read_text())
        assert double["world_size"] == 2
        for name in INTERVAL_FIELDS:
            # The same resamples of the same examples (gathered in data-set order); the
            # two trajectories agree up to float rounding, as their metrics do.
            assert double[name] == pytest.approx(single[name], abs=1.5 / 33), (run.run_id, name)
        assert double["final_test_metric_low"] <= double["final_test_metric"]
        assert double["final_test_metric"] <= double["final_test_metric_high"]
