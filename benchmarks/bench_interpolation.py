"""Interpolation barrier: ours against the authors' pattern, on a JPEG image-folder test set.

The authors' pattern (the paper's ``ckpt_interpolation.py``): for each lambda, load
the state ``(1 - lam) a + lam b`` into the model and run the whole test loader (which
opens, decodes, resizes and normalises every JPEG again). Ours,
``transferlens.analysis.interpolation_curve``, reads the loader once and evaluates every
lambda on the prepared batches. Both get the same loader: torchvision's
``ImageFolder`` over JPEG files with the authors' DomainNet test pipeline
(``Resize(size * 8/7) + CenterCrop(size)``), built here in a temporary folder.

The gain is the decoding saved, so it depends on how decoding (D, one pass of the
loader) compares with the forward passes (F, one pass of the model over prepared
batches): authors ``11 (D + F)``, ours ``D + 11 F``; both are measured and printed.

    python benchmarks/bench_interpolation.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from common import (
    Comparison,
    machine_load,
    max_abs_diff,
    measure_run_memory,
    print_lines,
    report_worker_result,
    run_worker,
    time_interleaved,
    time_once,
)
from torch import nn
from torch.utils.data import DataLoader

N_LAMBDAS = 11
CLASSES = 10
STORED_PX = 256  # JPEG side on disk (DomainNet's photos are larger still)
IMAGE_SIZE = 64  # network input after Resize(73) + CenterCrop(64)
BATCH = 100
MODEL = ("fixup_resnet10", {"width": 16})
SPEEDUP = 3.0
TOLERANCE = 1e-6


def write_jpeg_folder(
    root: Path, per_class: int, seed: int = 0, stored_px: int = STORED_PX
) -> Path:
    """``root/<class>/<i>.jpg``: smooth random colour fields, ``stored_px`` square, quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in range(CLASSES):
        folder = root / f"class{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((stored_px, stored_px), Image.Resampling.BICUBIC)
            image.save(folder / f"{index:04d}.jpg", quality=90)
    return root


def make_loader(
    root: Path, image_size: int = IMAGE_SIZE, batch: int = BATCH, workers: int = 0
) -> DataLoader:
    """The test loader both sides get: JPEGs decoded by ``ImageFolder`` on every pass."""
    from torchvision.datasets import ImageFolder

    from transferlens.data.transforms import IMAGENET_MEAN, IMAGENET_STD, domainnet_transform

    transform = domainnet_transform(image_size, False, IMAGENET_MEAN, IMAGENET_STD)
    dataset = ImageFolder(str(root), transform)
    return DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers)


def make_models(
    model: tuple[str, dict] = MODEL, device: str = "cpu"
) -> tuple[nn.Module, nn.Module]:
    """Two networks of the same architecture, far apart, with no zero (Fixup) branch left."""
    from transferlens.models import build_model

    name, kwargs = model
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(name, CLASSES, **kwargs).eval().to(device)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        models.append(model)
    return models[0], models[1]


# -- the authors' pattern, written from their description ------------------------------


def interpolate(state_a: dict, state_b: dict, weight: float) -> dict:
    return {key: (1 - weight) * state_a[key] + weight * state_b[key] for key in state_a}


def authors_eval(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy, the way a test epoch averages them."""
    criterion = nn.CrossEntropyLoss()
    loss_sum, correct, count = 0.0, 0, 0
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            logits = model(images)
            loss_sum += criterion(logits, targets).item() * len(targets)
            correct += int((logits.argmax(dim=1) == targets).sum())
            count += len(targets)
    return loss_sum / count, correct / count


def authors(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    import copy

    model = copy.deepcopy(model_a)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    rows = []
    for weight in np.linspace(0.0, 1.0, N_LAMBDAS):
        model.load_state_dict(interpolate(state_a, state_b, float(weight)))
        rows.append((float(weight), *authors_eval(model, loader)))
    return np.array(rows)


def ours(model_a: nn.Module, model_b: nn.Module, loader: DataLoader) -> np.ndarray:
    from transferlens.analysis import interpolation_curve, lambda_grid

    result = interpolation_curve(
        model_a, model_b, loader, "multiclass", lams=lambda_grid(N_LAMBDAS)
    )
    return np.array([result.lams, result.loss, result.metric], dtype=np.float64).T


def barriers(curve: np.ndarray) -> tuple[float, float]:
    import pandas as pd

    from transferlens.analysis import barrier

    return barrier(pd.DataFrame(curve, columns=["lam", "loss", "metric"]))


CONTENDERS = {"ours": ours, "authors' pattern": authors}


def worker(name: str, root: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    models, loader = make_models(), make_loader(root)
    report_worker_result(measure_run_memory(lambda: CONTENDERS[name](*models, loader)))


def decode_and_forward_seconds(models, loader: DataLoader) -> tuple[float, float]:
    """D: one pass of the loader alone; F: one forward pass of model a over its batches."""
    seconds_d, batches = time_once(lambda: list(loader))
    device = next(models[0].parameters()).device
    batches = [(images.to(device), targets) for images, targets in batches]

    def forward() -> None:
        with torch.inference_mode():
            for images, _ in batches:
                models[0](images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    forward()
    seconds_f, _ = time_once(forward)
    return seconds_d, seconds_f


def compare(per_class: int, repeats: int, threads: int, measure_memory: bool = True):
    torch.set_num_threads(threads)
    folder = Path(tempfile.mkdtemp(prefix="bench-interp-"))
    try:
        root = write_jpeg_folder(folder / "test", per_class)
        models, loader = make_models(), make_loader(root)
        decode, forward = decode_and_forward_seconds(models, loader)
        runners = {name: (lambda f=f: lambda: f(*models, loader)) for name, f in CONTENDERS.items()}
        times = time_interleaved(runners, repeats)
        peaks = {}
        if measure_memory:
            for name in CONTENDERS:
                args = ["--contender", name, "--root", str(root), "--threads", str(threads)]
                peaks[name] = run_worker(Path(__file__), args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    mine, peer = times["ours"], times["authors' pattern"]
    for timed in (mine, peer):
        if timed.error:
            raise RuntimeError(timed.error)
    curve_diff = max_abs_diff(mine.value[:, 1:], peer.value[:, 1:])
    barrier_diff = max_abs_diff(barriers(mine.value), barriers(peer.value))
    diff = max(curve_diff, barrier_diff)
    ratio = peer.median / mine.median
    bound = N_LAMBDAS * (decode + forward) / (decode + N_LAMBDAS * forward)
    n_images = per_class * CLASSES
    return [
        Comparison(
            f"interpolation {N_LAMBDAS} lambdas {n_images} JPEGs",
            "authors' pattern",
            ours_seconds=mine.median,
            peer_seconds=peer.median,
            ours_cpu_seconds=mine.cpu_median,
            peer_cpu_seconds=peer.cpu_median,
            best_ratio=peer.best / mine.best,
            diff=diff,
            ours_peak_mib=peaks.get("ours", {}).get("peak_mib"),
            ours_extra_mib=peaks.get("ours", {}).get("extra_mib"),
            peer_peak_mib=peaks.get("authors' pattern", {}).get("peak_mib"),
            peer_extra_mib=peaks.get("authors' pattern", {}).get("extra_mib"),
            target=f">= {SPEEDUP:g}x & |diff| <= {TOLERANCE:g}",
            met=ratio >= SPEEDUP and diff <= TOLERANCE,
            note=(
                f"{MODEL[0]} {MODEL[1]} at {IMAGE_SIZE}px from {STORED_PX}px JPEGs; "
                f"D {decode:.2f}s F {forward:.2f}s per pass, 11(D+F)/(D+11F) = {bound:.2f}x"
            ),
        )
    ]


def run(quick: bool = False, threads: int = 2) -> list[Comparison]:
    return compare(30 if quick else 50, 1 if quick else 3, threads, measure_memory=not quick)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 images, one repeat, no memory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.contender, args.root, args.threads)
        return
    print(f"# interpolation: {machine_load()}, {args.threads} threads", flush=True)
    print_lines(run(args.quick, args.threads))


if __name__ == "__main__":
    sys.exit(main())
