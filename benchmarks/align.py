"""Weight matching (Git Re-Basin) of two randomly initialised ResNet-50s, wall time.

Issue #17's target: under 10 s on 2 CPU cores for a ResNet-50 pair. Measures
``transferlens.analysis.alignment(a, b, method="weights")`` end to end (tracing the
graph, deriving the groups, coordinate descent with float32 products, building the
aligned copy) for torchvision's ResNet-50 (BatchNorm) and the paper's Fixup ResNet-50,
and checks that the aligned copy computes model B's function. Beside it, on the same
groups: ``weight_matching(..., dtype=torch.float64)`` (the float64 reference), and with
``--before REV`` the ``weight_matching`` of an older commit (read with ``git show``;
e.g. ``8274ecc``, before the incremental costs), with the ratios to ours. Every
contender's objective ``sum_W <W_a, P(W_b)>`` is printed relative to ours: coordinate
descent ends in a local optimum, and near-ties can send float32 and float64 down
different paths to equally good ones. The rebasin package is compared only if it is
installed (it is not, here).

On a machine shared with other work, OpenMP's spinning threads fight the other
processes: there, ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) or
``--threads 1`` is faster (measured at load 3.7 on 2 cores, torchvision pair:
21.1 s with 2 threads, 7.8 s with 2 passive threads, 6.6 s with 1 thread).

    python benchmarks/align.py [--threads 2] [--repeats 1] [--before 8274ecc]
    OMP_WAIT_POLICY=PASSIVE python benchmarks/align.py --before 8274ecc
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from transferlens.analysis import alignment
from transferlens.analysis.permutation_groups import PermutationGroup, permute_state
from transferlens.analysis.weight_matching import weight_matching
from transferlens.models import build_model

TARGET_S = 10.0
ROOT = Path(__file__).resolve().parents[1]


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


def older_weight_matching(rev: str) -> Callable:
    """``weight_matching`` as of commit ``rev`` (its module source, run from memory)."""
    path = "src/transferlens/analysis/weight_matching.py"
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(f"weight_matching_{rev}")
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
    return module.weight_matching


def objective(groups: tuple[PermutationGroup, ...], state_a: dict, state_b: dict,
              perms: dict[str, torch.Tensor]) -> float:  # fmt: skip
    """``sum_W <W_a, P(W_b)>`` over every tensor a group touches, in float64."""
    keys = {axis.key for group in groups for axis in group.axes}
    permuted = permute_state({k: state_b[k].double() for k in keys}, groups, perms)
    return sum(float((state_a[k].double() * permuted[k]).sum()) for k in keys)


def timed(function: Callable, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def compare(kind: str, repeats: int, before: Callable | None, rev: str | None) -> None:
    """One model pair: ``alignment()`` against the target, then the contenders."""
    model_a, model_b = models(kind, 0), models(kind, 1)
    ours, result = timed(lambda: alignment(model_a, model_b, method="weights"), repeats)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (result.model(x) - model_b(x)).abs().max().item()
    verdict = "yes" if ours < TARGET_S else "NO"
    print(
        f"weight matching {kind} | alignment() {ours:.2f} s | sweeps {result.sweeps} | "
        f"groups {len(result.groups)} | max|aligned(x) - b(x)| {diff:.2e} | "
        f"target < {TARGET_S:.0f} s: {verdict}"
    )
    groups, state_a, state_b = result.groups, model_a.state_dict(), model_b.state_dict()
    reference = objective(groups, state_a, state_b, result.permutations)
    contenders = {
        "float32 products": lambda: weight_matching(groups, state_a, state_b),
        "float64 products": lambda: weight_matching(groups, state_a, state_b, dtype=torch.float64),
    }
    if before is not None:
        contenders[f"as of {rev}"] = lambda: before(groups, state_a, state_b)
    base = None
    for name, run in contenders.items():
        seconds, (perms, sweeps) = timed(run, repeats)
        base = base or seconds
        gap = objective(groups, state_a, state_b, perms) / reference - 1
        print(
            f"    weight_matching, {name} | {seconds:.2f} s | ratio to float32 "
            f"{seconds / base:.2f}x | sweeps {sweeps} | objective vs ours {gap:+.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--before", metavar="REV", help="also time weight_matching as of REV")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    before = older_weight_matching(args.before) if args.before else None
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# start: load {load} on {os.cpu_count()} cpus, {args.threads} threads")
    if importlib.util.find_spec("rebasin") is None:
        print("# rebasin: not installed here, not compared")
    for kind in ("torchvision resnet50", "fixup resnet50"):
        compare(kind, args.repeats, before, args.before)
        sys.stdout.flush()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# end: load {load}")


if __name__ == "__main__":
    main()
