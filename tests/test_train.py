"""The training layer: protocol, init, optimiser rule, schedule, mixup, run folders, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from transferlens.data import DataSplits, register_dataset
from transferlens.data.tensor_dataset import TensorImageDataset
from transferlens.errors import UserInputError
from transferlens.io import atomic_save_safetensors
from transferlens.metrics import task_loss
from transferlens.train import (
    TrainingDiverged,
    TrainSpec,
    available_epochs,
    checkpoint_path,
    load_model,
    load_run,
    train,
)
from transferlens.train.init import initial_model
from transferlens.train.mixup import mixup
from transferlens.train.optim import build_optimizer, is_bias_or_scale, learning_rate
from transferlens.train.seeds import derive_seed

TIMING_KEYS = {"seconds", "eval_seconds", "images_per_second"}


@register_dataset("tiny_test_train")
def _tiny_blobs(spec) -> DataSplits:
    """Learnable 12 px images: class c brightens quadrant c % 4 of channel c % 3 (+ noise).

    ``options.classes`` sets the class count, ``options.n`` the split sizes.
    """
    classes = int(spec.options.get("classes", 4))
    n = int(spec.options.get("n", 96))
    size = spec.image_size or 12
    generator = torch.Generator().manual_seed(spec.split_seed)

    def split(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        targets = torch.arange(count) % classes
        images = torch.randint(40, 120, (count, 3, size, size), generator=generator)
        half = size // 2
        for index, target in enumerate(targets.tolist()):
            row, col = divmod(target % 4, 2)
            images[
                index, target % 3, row * half : (row + 1) * half, col * half : (col + 1) * half
            ] += 120
        return images.to(torch.uint8), targets

    mean, std = (0.4, 0.4, 0.4), (0.25, 0.25, 0.25)
    train_images, train_targets = split(n)
    test_images, test_targets = split(n // 2)
    train_set = TensorImageDataset(train_images, train_targets, mean, std, augment=spec.augment)
    return DataSplits(
        train=train_set,
        test=TensorImageDataset(test_images, test_targets, mean, std),
        num_classes=classes,
        task="multiclass",
        image_size=size,
        train_eval=train_set.with_options(augment=False),
    )


def make_spec(**overrides) -> TrainSpec:
    data = {"name": "tiny_test_train", "options": {"classes": 4, "n": 96}}
    data.update(overrides.pop("data", {}))
    values = {
        "model": "fixup_resnet10",
        "model_kwargs": {"stem": "cifar", "width": 8},
        "data": data,
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.1,
        "eval_batch_size": 64,
        "device": "cpu",
        "seed": 3,
    }
    values.update(overrides)
    return TrainSpec.model_validate(values)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A finished 2-epoch run on 4 classes, shared by the tests that read a run folder."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    train(make_spec(epochs=2), run_dir, progress=False)
    return run_dir


# --- the protocol ---------------------------------------------------------------------


def test_training_lowers_the_loss_and_writes_the_run_folder(source_run: Path) -> None:
    record = load_run(source_run)
    assert record.complete
    epochs = [r["epoch"] for r in record.metrics]
    assert epochs == [0, 1, 2]
    first, last = record.metrics[0], record.metrics[-1]
    assert last["test_loss"] < first["test_loss"]
    assert last["train_loss"] < first["train_loss"]
    assert last["test_metric"] > first["test_metric"]
    assert sorted(record.checkpoints) == [0, 1, 2] == available_epochs(source_run)
    summary = record.summary
    assert summary["final_test_metric"] == last["test_metric"]
    # Optimisation speed: mean train metric (eval mode) over epochs 1..E, not epoch 0.
    expected_speed = np.mean([r["train_metric"] for r in record.metrics[1:]])
    assert summary["optimization_speed"] == pytest.approx(expected_speed)
    best = max(record.metrics, key=lambda r: r["test_metric"])
    assert summary["best_test_metric"] == best["test_metric"]
    for key in ("test_loss", "train_metric", "lr", "seconds", "images_per_second", "step_loss"):
        assert key in last
    assert (source_run / "resume.safetensors").is_file()


def test_epoch0_checkpoint_is_the_init_and_the_seed_decides_it(source_run: Path) -> None:
    spec = make_spec(epochs=2)
    init = initial_model(spec, num_classes=4).state_dict()
    assert_same_tensors(read_state(checkpoint_path(source_run, 0)), init)
    other = initial_model(make_spec(seed=4), num_classes=4).state_dict()
    assert not torch.equal(init["conv1.weight"], other["conv1.weight"])
    # An explicit init seed fixes the weights whatever the run seed.
    a = initial_model(make_spec(seed=1, init={"kind": "random", "seed": 7}), 4).state_dict()
    b = initial_model(make_spec(seed=2, init={"kind": "random", "seed": 7}), 4).state_dict()
    assert_same_tensors(a, b)


def test_pt_at_epoch0_differs_from_p_only_in_the_head(source_run: Path, tmp_path: Path) -> None:
    p_state = read_state(checkpoint_path(source_run, 2))
    target = make_spec(
        epochs=1,
        data={"options": {"classes": 3, "n": 48}, "split_seed": 5},
        init={"kind": "run", "run": str(source_run), "epoch": "final"},
    )
    train(target, tmp_path / "pt", progress=False)
    pt0 = read_state(checkpoint_path(tmp_path / "pt", 0))
    head = {k for k in pt0 if k.startswith("fc.")}
    assert head == {"fc.weight", "fc.bias", "fc.input_bias"}
    for key in pt0:
        if key not in head:
            assert torch.equal(pt0[key], p_state[key]), key
    assert pt0["fc.weight"].shape == (3, p_state["fc.weight"].shape[1])
    assert float(pt0["fc.input_bias"]) == 0.0 != float(p_state["fc.input_bias"])
    # The same backbone from a weights file gives the same epoch-0 model.
    weights = tmp_path / "p.safetensors"
    atomic_save_safetensors(p_state, weights)
    from_file = TrainSpec.model_validate(
        {**target.model_dump(), "init": {"kind": "file", "path": str(weights)}}
    )
    assert_same_tensors(initial_model(from_file, 3).state_dict(), pt0)


def test_pretrained_init_builds_with_weights_kwargs_and_resets_the_head(monkeypatch) -> None:
    from transferlens import models

    calls = []
    real_build = models.build_model

    def fake_build(name, num_classes, **kwargs):
        calls.append(dict(kwargs))
        kwargs.pop("weights", None)
        return real_build(name, num_classes, **kwargs)

    monkeypatch.setattr(models, "build_model", fake_build)
    spec = make_spec(init={"kind": "pretrained"})
    model = initial_model(spec, 4)
    assert calls[-1]["weights"] == "DEFAULT" and calls[-1]["stem"] == "cifar"
    head_seed = derive_seed(spec.seed, "head") % 2**63
    expected = torch.empty_like(model.fc.weight)
    nn.init.kaiming_uniform_(expected, a=5**0.5, generator=torch.Generator().manual_seed(head_seed))
    assert torch.equal(model.fc.weight, expected)


# --- optimiser and schedule -----------------------------------------------------------


def test_bias_and_scale_train_at_a_tenth_of_the_rate_with_weight_decay_on_all() -> None:
    torch.manual_seed(0)
    model = initial_model(make_spec(), 4)
    optimizer = build_optimizer(model, lr=0.2, momentum=0.9, weight_decay=1e-3)
    by_name = {}
    for group in optimizer.param_groups:
        for name in group["names"]:
            by_name[name] = (group["lr"], group["weight_decay"])
    assert set(by_name) == {name for name, _ in model.named_parameters()}
    for slow in (
        "fc.bias",
        "fc.input_bias",
        "conv1.output_bias",
        "layer1.0.bias1a",
        "layer2.0.scale",
    ):
        assert by_name[slow] == (pytest.approx(0.02), 1e-3), slow
    for fast in (
        "conv1.weight",
        "fc.weight",
        "layer3.0.conv2.weight",
        "layer2.0.downsample.weight",
    ):
        assert by_name[fast] == (0.2, 1e-3), fast
    assert is_bias_or_scale("layer1.0.bias2b") and not is_bias_or_scale("layer1.0.conv1.weight")
    # One SGD step from zero momentum: p <- p - lr_group * (grad + wd * p), on every group.
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        lr = 0.02 if is_bias_or_scale(name) else 0.2
        expected = before[name] - lr * (1.0 + 1e-3 * before[name])
        assert torch.allclose(p.detach(), expected, atol=1e-6), name


def test_multistep_schedule_matches_pytorch_and_the_run_records() -> None:
    milestones, gamma = [3, 6, 8], 0.1
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma)
    for completed in range(10):
        assert learning_rate(0.4, completed, milestones, gamma) == pytest.approx(
            optimizer.param_groups[0]["lr"]
        )
        optimizer.step()
        scheduler.step()
    # "x0.1 at epochs 30, 60": epoch 30 at lr, epoch 31 at lr / 10.
    assert learning_rate(0.1, 29, [30, 60], 0.1) == 0.1
    assert learning_rate(0.1, 30, [30, 60], 0.1) == pytest.approx(0.01)


def test_learning_rates_recorded_per_epoch(tmp_path: Path) -> None:
    spec = make_spec(epochs=3, lr=0.1, lr_milestones=[1, 2], lr_gamma=0.5, train_eval=False)
    train(spec, tmp_path / "run", progress=False)
    records = load_run(tmp_path / "run").metrics
    assert [r["lr"] for r in records] == [None, 0.1, 0.05, 0.025]
    assert all(r["train_metric"] is None for r in records)
    assert load_run(tmp_path / "run").summary["optimization_speed"] is None


class StepSpy:
    """Records, at every optimiser step, the base rate and the global gradient norm."""

    def __init__(self, monkeypatch) -> None:
        self.rates: list[float] = []
        self.grad_norms: list[float] = []
        original = torch.optim.SGD.step
        spy = self

        def step(optimizer, *args, **kwargs):
            group = optimizer.param_groups[0]
            spy.rates.append(group["lr"] / group["lr_factor"])
            grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
            spy.grad_norms.append(
                float(
                    torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None])
                    )
                )
            )
            return original(optimizer, *args, **kwargs)

        monkeypatch.setattr(torch.optim.SGD, "step", step)


def test_warmup_rises_linearly_per_step_over_the_scheduled_rate(tmp_path, monkeypatch) -> None:
    spy = StepSpy(monkeypatch)
    # 96 images in batches of 16: 6 steps per epoch, 12 warm-up steps over epochs 1-2.
    spec = make_spec(epochs=3, lr=0.1, lr_milestones=[1], warmup_epochs=2)
    train(spec, tmp_path / "run", progress=False)
    scheduled = [0.1] * 6 + [0.01] * 12
    expected = [rate * min(1.0, (step + 1) / 12) for step, rate in enumerate(scheduled)]
    assert spy.rates == pytest.approx(expected, rel=1e-12)
    assert [r["lr"] for r in load_run(tmp_path / "run").metrics][1:] == pytest.approx(
        scheduled[::6]
    )


def test_gradient_clipping_bounds_the_global_norm_of_every_step(tmp_path, monkeypatch) -> None:
    spy = StepSpy(monkeypatch)
    train(make_spec(epochs=1), tmp_path / "free", progress=False)
    free = list(spy.grad_norms)
    spy.grad_norms.clear()
    limit = 0.5 * min(free)  # below every unclipped norm: every step is clipped
    train(make_spec(epochs=1, grad_clip_norm=limit), tmp_path / "clipped", progress=False)
    assert spy.grad_norms[0] == pytest.approx(limit, rel=1e-5)  # same start, clipped
    assert max(spy.grad_norms) <= limit * (1 + 1e-5)


def test_a_diverging_run_stops_before_saving_the_epoch(tmp_path: Path) -> None:
    spec = make_spec(epochs=3, lr=1e12)
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 1 \(mean step loss nan\)"):
        train(spec, tmp_path / "run", progress=False)
    assert available_epochs(tmp_path / "run") == [0]
    assert not (tmp_path / "run" / "complete.json").exists()
    assert [r["epoch"] for r in load_run(tmp_path / "run").metrics] == [0]


# --- mixup ----------------------------------------------------------------------------


def test_mixup_mixes_images_and_targets_with_one_lambda_and_permutation() -> None:
    images = torch.randn(6, 3, 4, 4)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, soft = mixup(
        images,
        targets,
        alpha=0.7,
        num_classes=3,
        task="multiclass",
        rng=np.random.default_rng(11),
        generator=torch.Generator().manual_seed(12),
    )
    lam = np.random.default_rng(11).beta(0.7, 0.7)
    permutation = torch.randperm(6, generator=torch.Generator().manual_seed(12))
    one_hot = F.one_hot(targets, 3).float()
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[permutation], atol=1e-6)
    assert torch.allclose(soft, lam * one_hot + (1 - lam) * one_hot[permutation], atol=1e-6)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    # The loss on mixed targets is Zhang et al.'s lam * L(y) + (1 - lam) * L(y[pi]).
    logits = torch.randn(6, 3)
    mixed_loss = task_loss(logits, soft, "multiclass")
    pair_loss = lam * F.cross_entropy(logits, targets) + (1 - lam) * F.cross_entropy(
        logits, targets[permutation]
    )
    assert mixed_loss.item() == pytest.approx(pair_loss.item(), rel=1e-5)


def test_mixup_of_multilabel_targets_mixes_the_vectors() -> None:
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    _, soft = mixup(
        torch.zeros(3, 1, 2, 2),
        targets,
        alpha=1.0,
        num_classes=2,
        task="multilabel",
        rng=np.random.default_rng(0),
        generator=torch.Generator().manual_seed(1),
    )
    lam = np.random.default_rng(0).beta(1.0, 1.0)
    permutation = torch.randperm(3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(soft, lam * targets + (1 - lam) * targets[permutation])


# --- resume and the run folder --------------------------------------------------------


class Crash(RuntimeError):
    pass


def crash_after(epoch: int):
    def on_epoch(finished: int, record: dict) -> None:
        if finished == epoch:
            raise Crash(f"injected after epoch {epoch}")

    return on_epoch


def assert_same_runs(straight: Path, resumed: Path) -> None:
    assert available_epochs(straight) == available_epochs(resumed)
    for epoch in available_epochs(straight):
        assert_same_tensors(
            read_state(checkpoint_path(straight, epoch)),
            read_state(checkpoint_path(resumed, epoch)),
        )
    assert_same_tensors(
        read_state(straight / "resume.safetensors"), read_state(resumed / "resume.safetensors")
    )
    assert without_timings(load_run(straight).metrics) == without_timings(load_run(resumed).metrics)


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path: Path) -> None:
    # Augmentation, mixup and shuffling all draw random numbers: each must resume exactly.
    spec = make_spec(epochs=3, mixup_alpha=0.7, data={"augment": True})
    train(spec, tmp_path / "straight", progress=False)
    with pytest.raises(Crash):
        train(spec, tmp_path / "resumed", progress=False, on_epoch=crash_after(1))
    assert not (tmp_path / "resumed" / "complete.json").exists()
    summary = train(spec, tmp_path / "resumed", progress=False)
    assert summary.resumed_from == 1 and not summary.already_complete
    assert_same_runs(tmp_path / "straight", tmp_path / "resumed")


def test_resume_inside_the_warmup_is_bit_identical(tmp_path: Path) -> None:
    spec = make_spec(epochs=3, warmup_epochs=2, grad_clip_norm=1.0)
    train(spec, tmp_path / "straight", progress=False)
    with pytest.raises(Crash):
        train(spec, tmp_path / "resumed", progress=False, on_epoch=crash_after(1))
    train(spec, tmp_path / "resumed", progress=False)
    assert_same_runs(tmp_path / "straight", tmp_path / "resumed")


def test_resume_drops_records_after_the_last_saved_epoch_and_a_torn_line(tmp_path: Path) -> None:
    spec = make_spec(epochs=4, checkpoint_every=2, mixup_alpha=0.4)
    train(spec, tmp_path / "straight", progress=False)
    run_dir = tmp_path / "resumed"
    with pytest.raises(Crash):
        train(spec, run_dir, progress=False, on_epoch=crash_after(3))
    assert [r["epoch"] for r in load_run(run_dir).metrics] == [0, 1, 2, 3]
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"epoch": 4, "test_lo')  # a write torn by the crash
    summary = train(spec, run_dir, progress=False)
    assert summary.resumed_from == 2
    assert available_epochs(run_dir) == [0, 2, 4]
    assert_same_runs(tmp_path / "straight", run_dir)


def test_a_complete_run_is_returned_without_recomputing(source_run: Path) -> None:
    files = sorted(p for p in source_run.rglob("*") if p.is_file())
    stamps = {p: os.stat(p).st_mtime_ns for p in files}
    summary = train(make_spec(epochs=2), source_run, progress=False)
    assert summary.already_complete
    assert summary.final_test_metric == load_run(source_run).summary["final_test_metric"]
    assert sorted(p for p in source_run.rglob("*") if p.is_file()) == files
    assert {p: os.stat(p).st_mtime_ns for p in files} == stamps


def test_a_folder_holding_another_spec_is_refused(source_run: Path) -> None:
    with pytest.raises(UserInputError, match=r"spec.json.*lr"):
        train(make_spec(epochs=2, lr=0.5), source_run, progress=False)
    # Execution-only settings may differ (here: the evaluation batch).
    assert train(
        make_spec(epochs=2, eval_batch_size=7), source_run, progress=False
    ).already_complete


def test_a_folder_from_before_the_stabilisers_existed_still_matches(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(make_spec(epochs=1), run_dir, progress=False)
    stored = json.loads((run_dir / "spec.json").read_text())
    del stored["warmup_epochs"], stored["grad_clip_norm"]  # as written before they existed
    (run_dir / "spec.json").write_text(json.dumps(stored))
    assert train(make_spec(epochs=1), run_dir, progress=False).already_complete
    with pytest.raises(UserInputError, match=r"spec.json.*grad_clip_norm"):
        train(make_spec(epochs=1, grad_clip_norm=1.0), run_dir, progress=False)


def test_load_model_rebuilds_each_saved_epoch(source_run: Path) -> None:
    final = load_model(source_run)
    assert_same_tensors(final.state_dict(), read_state(checkpoint_path(source_run, 2)))
    assert not final.training
    first = load_model(source_run, 1)
    assert_same_tensors(first.state_dict(), read_state(checkpoint_path(source_run, 1)))
    best = load_model(source_run, "best")
    best_epoch = load_run(source_run).summary["best_saved_epoch"]
    assert_same_tensors(best.state_dict(), read_state(checkpoint_path(source_run, best_epoch)))
    spec_json = json.loads((source_run / "spec.json").read_text())
    assert TrainSpec.model_validate(spec_json) == make_spec(epochs=2)
    assert load_run(source_run).train_spec() == make_spec(epochs=2)


def test_bad_init_sources_are_user_errors(source_run: Path, tmp_path: Path) -> None:
    cases = [
        ({"kind": "run", "run": str(tmp_path / "nowhere")}, "not a run folder"),
        ({"kind": "run", "run": str(source_run), "epoch": 9}, "no checkpoint of epoch 9"),
        ({"kind": "file", "path": str(tmp_path / "none.safetensors")}, "not found"),
    ]
    for init, message in cases:
        with pytest.raises(UserInputError, match=message):
            train(make_spec(init=init), tmp_path / "run", progress=False)
        assert not (tmp_path / "run").exists()  # nothing written for a bad spec
    incomplete = tmp_path / "incomplete"
    with pytest.raises(Crash):
        train(make_spec(epochs=2), incomplete, progress=False, on_epoch=crash_after(0))
    with pytest.raises(UserInputError, match="needs a complete run"):
        train(
            make_spec(init={"kind": "run", "run": str(incomplete)}),
            tmp_path / "run",
            progress=False,
        )
    other_model = make_spec(model="fixup_resnet18", init={"kind": "run", "run": str(source_run)})
    with pytest.raises(UserInputError, match="trained model"):
        train(other_model, tmp_path / "run", progress=False)


# --- two processes (gloo, CPU) --------------------------------------------------------


def _train_in_group(rank: int, world_size: int, port: int, spec_json: str, run_dir: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    train(TrainSpec.model_validate_json(spec_json), run_dir, progress=False)
    # Both ranks done with every collective before either tears gloo down: a rank that
    # destroys its group while the other still talks to it can abort the other (seen once
    # under load: "terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_training_matches_one_process(tmp_path: Path) -> None:
    """DDP with 2 x 8 images per step sees the same global batches as 1 x 16 (the shared
    permutation is dealt out rank by rank), so both runs agree up to float rounding."""
    import socket

    import torch.multiprocessing as mp

    spec = make_spec(epochs=2, batch_size=16)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ddp_dir = tmp_path / "ddp"
    mp.spawn(
        _train_in_group, args=(2, port, spec.model_dump_json(), str(ddp_dir)), nprocs=2, join=True
    )
    train(spec, tmp_path / "single", progress=False)
    ddp, single = load_run(ddp_dir), load_run(tmp_path / "single")
    assert ddp.complete and ddp.summary["world_size"] == 2
    assert [r["images"] for r in ddp.metrics] == [r["images"] for r in single.metrics]
    for a, b in zip(ddp.metrics, single.metrics):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-4)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    final_ddp = read_state(checkpoint_path(ddp_dir, 2))
    final_single = read_state(checkpoint_path(tmp_path / "single", 2))
    initial = read_state(checkpoint_path(tmp_path / "single", 0))
    assert_same_tensors(read_state(checkpoint_path(ddp_dir, 0)), initial)
    for key, value in final_single.items():
        assert torch.allclose(final_ddp[key], value, atol=1e-5, rtol=1e-4), key
    assert not torch.equal(final_single["conv1.weight"], initial["conv1.weight"])


# --- loaders --------------------------------------------------------------------------


def test_loaders_unpack_and_train_eval_subset_is_fixed_by_the_data_alone() -> None:
    from transferlens.train import build_loaders

    subsets = []
    for seed in (0, 1):
        train_loader, test_loader, train_eval_loader, splits = build_loaders(
            make_spec(seed=seed, train_eval_size=10)
        )
        assert len(train_eval_loader.dataset) == 10 and len(test_loader.dataset) == 48
        subsets.append(list(train_eval_loader.dataset.indices))
        assert splits.num_classes == 4 and len(train_loader.dataset) == 96
    assert subsets[0] == subsets[1] == sorted(subsets[0])
    no_eval = build_loaders(make_spec(train_eval=False))
    assert no_eval.train_eval is None


def test_worker_processes_resume_bit_identically(tmp_path: Path) -> None:
    spec = make_spec(epochs=2, num_workers=1, data={"augment": True})
    train(spec, tmp_path / "straight", progress=False)
    with pytest.raises(Crash):
        train(spec, tmp_path / "resumed", progress=False, on_epoch=crash_after(1))
    train(spec, tmp_path / "resumed", progress=False)
    assert_same_runs(tmp_path / "straight", tmp_path / "resumed")


def test_progress_shows_bars_and_lines_and_changes_no_number(tmp_path, monkeypatch, capsys) -> None:
    import rich.console

    from transferlens.train import progress

    # A terminal, so that the bar is really drawn (pytest's stderr is not one).
    monkeypatch.setattr(
        progress, "Console", lambda **kw: rich.console.Console(force_terminal=True, **kw)
    )
    spec = make_spec(epochs=2)
    train(spec, tmp_path / "quiet", progress=False)
    assert capsys.readouterr().out == ""
    train(spec, tmp_path / "shown", progress=True)
    captured = capsys.readouterr()
    assert [line.split("  ")[0] for line in captured.out.splitlines()] == [
        "epoch 0/2",
        "epoch 1/2",
        "epoch 2/2",
    ]
    assert "epoch 1/2" in captured.err and "loss" in captured.err  # the bar, on stderr
    quiet, shown = load_run(tmp_path / "quiet"), load_run(tmp_path / "shown")
    assert without_timings(quiet.metrics) == without_timings(shown.metrics)
    for epoch in (0, 1, 2):
        assert_same_tensors(
            read_state(checkpoint_path(tmp_path / "quiet", epoch)),
            read_state(checkpoint_path(tmp_path / "shown", epoch)),
        )
