"""Module criticality: forward passes spent by ours against the full grid.

The reference (Chatterji et al.; google-research/meta-dataset's ``criticality.py``)
evaluates every point of the grid for every module: 11 alphas x 11 sigmas x 10 noise
draws, each draw a pass over the data. This file writes that full grid out plainly:
module set to ``lerp(theta0, thetaF, alpha)`` plus ``sigma * z`` on its parameters, the
mean loss of each draw, feasible points ``mean over draws <= 1.01 L(thetaF)``, and the
smallest ``alpha^2 ||thetaF - theta0||^2 / sigma^2`` among them (ties to the first
point, sigma-major). The noise of each draw comes from our documented seed
(``perturb.noise_seed``), so both sides perturb the network identically and must
return identical criticality values. Ours (``module_criticality``, ``search="pruned"``)
visits points in increasing objective and stops early; its result's ``n_forward_passes``
counts every pass it began.

Model: a small Fixup ResNet-10 trained here for a few steps (``thetaF``) from its
random initialisation (``theta0``); the loss data are 128 generated images in 2 batches.

    python benchmarks/bench_criticality.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from common import (
    Comparison,
    machine_load,
    measure_run_memory,
    print_lines,
    report_worker_result,
    run_worker,
    time_interleaved,
)
from torch import nn
from torch.nn import functional as F

ALPHAS = [float(a) for a in np.linspace(0.0, 1.0, 11)]
SIGMAS = [float(s) for s in np.linspace(1e-16, 1.0, 11)]
N_NOISE = 10
TOLERANCE = 1.01
SEED = 0
CLASSES = 10
IMAGE_SIZE = 16
PASS_RATIO = 5.0


def make_data(n_images: int = 128, batch: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Images = class template + noise, so that a few training steps learn something."""
    generator = torch.Generator().manual_seed(0)
    templates = torch.randn(CLASSES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    labels = torch.arange(n_images) % CLASSES
    images = templates[labels] + 0.8 * torch.randn(
        n_images, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator
    )
    return [(images[i : i + batch], labels[i : i + batch]) for i in range(0, n_images, batch)]


def make_models(batches) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(thetaF as a trained model, theta0 as a state dict)."""
    from transferlens.models import build_model

    torch.manual_seed(0)
    model = build_model("fixup_resnet10", CLASSES, stem="cifar", width=8)
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    model.train()
    for _ in range(30):  # to ~98% training accuracy, loss ~0.5
        for images, labels in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
    return model.eval(), initial


# -- the full grid, written from the reference's description ---------------------------


def mean_loss(model: nn.Module, batches) -> float:
    """Mean cross-entropy: float64 sum of each batch's summed losses, over the examples."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for images, labels in batches:
            total += float(F.cross_entropy(model(images).float(), labels, reduction="sum").double())
            count += len(labels)
    return total / count


def full_grid(model_final: nn.Module, initial: dict, batches, modules: Sequence[str]):
    """``{module: (criticality, alpha, sigma)}`` and the number of passes over the data."""
    from transferlens.analysis.perturb import noise_seed

    working = copy.deepcopy(model_final)
    final = {key: value.clone() for key, value in working.state_dict().items()}
    epsilon = TOLERANCE * mean_loss(working, batches)
    passes = 1
    results = {}
    parameters = dict(working.named_parameters())
    state = working.state_dict(keep_vars=True)
    for module in modules:
        names = [
            k
            for k in state
            if (k == module or k.startswith(module + ".")) and state[k].is_floating_point()
        ]
        weights = [k for k in names if k in parameters]
        squared = float(
            sum(float(((final[k].double() - initial[k].double()) ** 2).sum()) for k in weights)
        )
        best = None
        for i_sigma, sigma in enumerate(SIGMAS):
            for i_alpha, alpha in enumerate(ALPHAS):
                point = i_sigma * len(ALPHAS) + i_alpha
                losses = []
                for sample in range(N_NOISE):
                    generator = torch.Generator().manual_seed(
                        noise_seed(SEED, module, point, sample)
                    )
                    with torch.no_grad():
                        for key in names:
                            state[key].copy_(torch.lerp(initial[key], final[key], alpha))
                        for key in weights:
                            noise = torch.randn(
                                state[key].shape, generator=generator, dtype=state[key].dtype
                            )
                            state[key].add_(noise * sigma)
                    losses.append(mean_loss(working, batches))
                    passes += 1
                objective = (alpha / sigma) ** 2 * squared
                if sum(losses) / N_NOISE <= epsilon and (best is None or objective < best[0]):
                    best = (objective, alpha, sigma)
        with torch.no_grad():
            for key in names:
                state[key].copy_(final[key])
        results[module] = best if best is not None else (float("inf"), float("nan"), float("nan"))
    return results, passes


def ours(model_final: nn.Module, initial: dict, batches, modules: Sequence[str]):
    from transferlens.analysis import module_criticality

    result = module_criticality(
        model_final,
        initial,
        batches,
        "multiclass",
        modules=list(modules),
        alphas=ALPHAS,
        sigmas=SIGMAS,
        n_noise=N_NOISE,
        tolerance=TOLERANCE,
        seed=SEED,
    )
    results = {
        row.module: (row.criticality, row.alpha, row.sigma)
        for row in result.modules
        if row.module in modules
    }
    return results, result.n_forward_passes


CONTENDERS = {"ours": ours, "full grid": full_grid}


def setup(quick: bool):
    from transferlens.models import criticality_modules

    batches = make_data()
    model, initial = make_models(batches)
    modules = criticality_modules(model)
    return model, initial, batches, (modules[:2] + modules[-1:]) if quick else modules


def worker(name: str, quick: bool, threads: int) -> None:
    """Peak memory of one contender on one module (it does not grow with their number)."""
    torch.set_num_threads(threads)
    model, initial, batches, modules = setup(quick)
    modules = modules[-1:]
    report_worker_result(
        measure_run_memory(lambda: CONTENDERS[name](model, initial, batches, modules))
    )


def compare(quick: bool, threads: int, measure_memory: bool = True) -> list[Comparison]:
    torch.set_num_threads(threads)
    model, initial, batches, modules = setup(quick)
    runners = {
        name: (lambda f=f: lambda: f(model, initial, batches, modules))
        for name, f in CONTENDERS.items()
    }
    times = time_interleaved(runners, 1)
    mine, peer = times["ours"], times["full grid"]
    for timed in (mine, peer):
        if timed.error:
            raise RuntimeError(timed.error)
    (values, passes), (reference, reference_passes) = mine.value, peer.value
    identical = all(
        np.array_equal(np.array(values[m]), np.array(reference[m]), equal_nan=True) for m in modules
    )
    diff = max(
        abs(values[m][0] - reference[m][0]) if np.isfinite(reference[m][0]) else 0.0
        for m in modules
    )
    peaks = {}
    if measure_memory:
        for name in CONTENDERS:
            args = ["--contender", name, "--threads", str(threads)] + (["--quick"] if quick else [])
            peaks[name] = run_worker(Path(__file__), args)
    pass_ratio = reference_passes / passes
    summary = ", ".join(f"{m} {values[m][0]:.3g}" for m in modules)
    return [
        Comparison(
            f"criticality {len(modules)} modules",
            "full grid 11x11x10",
            ours_seconds=mine.median,
            peer_seconds=peer.median,
            ours_cpu_seconds=mine.cpu_median,
            peer_cpu_seconds=peer.cpu_median,
            ratio=pass_ratio,
            ratio_label=f"passes {reference_passes}/{passes}",
            diff=diff,
            ours_peak_mib=peaks.get("ours", {}).get("peak_mib"),
            ours_extra_mib=peaks.get("ours", {}).get("extra_mib"),
            peer_peak_mib=peaks.get("full grid", {}).get("peak_mib"),
            peer_extra_mib=peaks.get("full grid", {}).get("extra_mib"),
            target=f">= {PASS_RATIO:g}x fewer passes & identical",
            met=pass_ratio >= PASS_RATIO and identical,
            note=("identical" if identical else "VALUES DIFFER")
            + f"; time ratio {peer.median / mine.median:.1f}x; criticality {summary}",
        )
    ]


def run(quick: bool = False, threads: int = 2) -> list[Comparison]:
    return compare(quick, threads, measure_memory=not quick)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 modules, no memory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.contender, args.quick, args.threads)
        return
    print(f"# criticality: {machine_load()}, {args.threads} threads", flush=True)
    print_lines(run(args.quick, args.threads))


if __name__ == "__main__":
    sys.exit(main())
