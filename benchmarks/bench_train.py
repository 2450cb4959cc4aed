"""Training throughput: our loop (``transferlens.train.train``) against a bare PyTorch loop.

Same model (the run's initial weights), same training split, same batch size, same
SGD settings, one process. Ours writes a full run folder (metrics, checkpoints, resume
state) and evaluates after every epoch; only its training passes are timed, which is
what its ``images_per_second`` record measures. The bare loop is the textbook
``forward, loss, zero_grad, backward, step`` over a shuffling ``DataLoader``.
Throughput is images per second of each of epochs 2..E (epoch 1 warms up), median
over the runs (best-of: the fastest epoch of each);
the ratio is ours / bare (1.0 = no overhead).

    python benchmarks/bench_train.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from common import (
    Comparison,
    machine_load,
    measure_run_memory,
    print_lines,
    report_worker_result,
    run_worker,
)
from torch.nn import functional as F
from torch.utils.data import DataLoader

TARGET = 0.95
EPOCHS = 3


def make_spec(train_size: int):
    from transferlens.data import DataSpec
    from transferlens.train import TrainSpec

    return TrainSpec(
        model="fixup_resnet10",
        model_kwargs={"stem": "cifar", "width": 16},
        data=DataSpec(name="synthetic", domain="real", train_size=train_size, test_size=64),
        epochs=EPOCHS,
        batch_size=128,
        lr=0.05,
        train_eval=False,
        device="cpu",
        num_workers=0,
    )


def ours(spec) -> list[float]:
    """Images per second of each epoch of a fresh run of our loop."""
    from transferlens.train import train

    folder = Path(tempfile.mkdtemp(prefix="bench-train-"))
    rates: list[float] = []
    try:
        train(
            spec,
            folder / "run",
            progress=False,
            on_epoch=lambda epoch, record: epoch and rates.append(record["images_per_second"]),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rates


def bare(spec) -> list[float]:
    """The same model, data and SGD settings in the plainest PyTorch loop."""
    from transferlens.data import build_data
    from transferlens.train.init import initial_model

    splits = build_data(spec.data)
    model = initial_model(spec, splits.num_classes).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
    )
    loader = DataLoader(splits.train, batch_size=spec.batch_size, shuffle=True)
    rates = []
    for _ in range(spec.epochs):
        start, images = time.perf_counter(), 0
        for inputs, targets in loader:
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(targets)
        rates.append(images / (time.perf_counter() - start))
    return rates


CONTENDERS = {"ours": ours, "bare PyTorch loop": bare}


def worker(name: str, train_size: int, threads: int) -> None:
    torch.set_num_threads(threads)
    spec = make_spec(train_size)
    from transferlens.data import build_data

    build_data(spec.data)  # data generation is set-up, not training
    report_worker_result(measure_run_memory(lambda: CONTENDERS[name](spec)))


def compare(train_size: int, runs: int, threads: int, measure_memory: bool = True):
    torch.set_num_threads(threads)
    spec = make_spec(train_size)
    from transferlens.data import build_data

    build_data(spec.data)  # generated once (cached), before any timing
    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for _ in range(runs):
        for name, run in CONTENDERS.items():
            rates[name] += run(spec)[1:]  # epoch 1 warms up
    mine = statistics.median(rates["ours"])
    peer = statistics.median(rates["bare PyTorch loop"])
    peaks = {}
    if measure_memory:
        for name in CONTENDERS:
            args = ["--contender", name, "--train-size", str(train_size), "--threads", str(threads)]
            peaks[name] = run_worker(Path(__file__), args)
    ratio = mine / peer
    return [
        Comparison(
            f"train {train_size} images x {EPOCHS - 1} epochs",
            "bare PyTorch loop",
            ours_seconds=train_size / mine,
            peer_seconds=train_size / peer,
            ratio=ratio,
            ratio_label="ours/bare img/s",
            best_ratio=max(rates["ours"]) / max(rates["bare PyTorch loop"]),
            ours_peak_mib=peaks.get("ours", {}).get("peak_mib"),
            ours_extra_mib=peaks.get("ours", {}).get("extra_mib"),
            peer_peak_mib=peaks.get("bare PyTorch loop", {}).get("peak_mib"),
            peer_extra_mib=peaks.get("bare PyTorch loop", {}).get("extra_mib"),
            target=f"throughput ratio >= {TARGET}",
            met=ratio >= TARGET,
            note=(
                f"{spec.model} {spec.model_kwargs} 32px batch {spec.batch_size}: "
                f"ours {mine:.0f} img/s, bare {peer:.0f} img/s (seconds are per epoch)"
            ),
        )
    ]


def run(quick: bool = False, threads: int = 2) -> list[Comparison]:
    return compare(512 if quick else 2048, 2 if quick else 3, threads, measure_memory=not quick)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 images, two runs, no memory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--train-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.contender, args.train_size, args.threads)
        return
    print(f"# train: {machine_load()}, {args.threads} threads", flush=True)
    print_lines(run(args.quick, args.threads))


if __name__ == "__main__":
    sys.exit(main())
