"""Weight matching (Git Re-Basin) of two randomly initialised ResNet-50s, wall time.

Issue #17's target: under 10 s on 2 CPU cores for a ResNet-50 pair. Measures
``transferlens.analysis.alignment(a, b, method="weights")`` (tracing the graph, deriving
the groups, coordinate descent with float64 cost matrices, building the aligned copy)
for torchvision's ResNet-50 (BatchNorm) and the paper's Fixup ResNet-50, and checks
that the aligned copy computes model B's function. No peer: the rebasin package is
not installed here.

    python benchmarks/align.py [--threads 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torchvision

from transferlens.analysis import alignment
from transferlens.models import build_model

TARGET_S = 10.0


def models(kind: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "torchvision resnet50":
        return torchvision.models.resnet50(num_classes=1000).eval()
    model = build_model("fixup_resnet50", 1000)
    with torch.no_grad():  # Fixup zeroes each branch's last conv: give it weights to match
        for parameter in model.parameters():
            if parameter.ndim == 4:
                parameter.add_(0.01 * torch.randn_like(parameter))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# start: load {load} on {os.cpu_count()} cpus, {args.threads} threads")
    for kind in ("torchvision resnet50", "fixup resnet50"):
        model_a, model_b = models(kind, 0), models(kind, 1)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = alignment(model_a, model_b, method="weights")
            times.append(time.perf_counter() - start)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            diff = (result.model(x) - model_b(x)).abs().max().item()
        best = min(times)
        verdict = "yes" if best < TARGET_S else "NO"
        print(
            f"weight matching {kind} | ours {best:.2f} s | sweeps {result.sweeps} | "
            f"groups {len(result.groups)} | max|aligned(x) - b(x)| {diff:.2e} | "
            f"target < {TARGET_S:.0f} s: {verdict}"
        )
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# end: load {load}")


if __name__ == "__main__":
    main()
