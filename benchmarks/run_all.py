"""Run every benchmark and print one line per comparison: ours against each peer.

Each line: what was compared, our time, the peer's time, the ratio (peer time / our
time unless the line says otherwise), the largest difference between the values the
two computed, the peak memory of each (MiB, resident set of a fresh process running
that contender once; "+N" = how far it rose during the run), and whether the target
was met. The first lines say under what load the numbers were taken: on a shared
machine the ratios are only as steady as its load.

    python benchmarks/run_all.py                 # everything (~10 min on 2 idle cores)
    python benchmarks/run_all.py --quick         # smaller, one repeat, no memory runs
    python benchmarks/run_all.py --only cka shuffle --json results.json
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from common import Comparison, add_peers_to_path, describe_error, machine_load

BENCHMARKS = {
    "shuffle": "bench_shuffle",
    "train": "bench_train",
    "interpolation": "bench_interpolation",
    "criticality": "bench_criticality",
    "cka": "bench_cka",
}


def peer_versions() -> str:
    from importlib import metadata

    add_peers_to_path()
    found = []
    for name in ("pytorch-cka", "torch-cka", "ckatorch"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} MISSING")
    return ", ".join(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat, no memory")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--json", type=Path, help="also write every comparison to this file")
    args = parser.parse_args(argv)

    names = args.only or list(BENCHMARKS)
    print(
        f"# transferlens benchmarks: torch {torch.__version__}, python {platform.python_version()},"
        f" {args.threads} threads, {'quick' if args.quick else 'full'}",
        flush=True,
    )
    print(f"# peers: {peer_versions()}", flush=True)
    print(f"# start: {machine_load()}", flush=True)
    comparisons: list[Comparison] = []
    failures: list[str] = []
    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        try:
            lines = module.run(quick=args.quick, threads=args.threads)
        except Exception as error:  # one broken benchmark must not hide the others
            failures.append(f"{name}: {describe_error(error)}")
            print(f"{name}: FAILED {describe_error(error)}", flush=True)
            continue
        for comparison in lines:
            print(comparison.line(), flush=True)
        comparisons += lines
    judged = [comparison for comparison in comparisons if comparison.met is not None]
    met = sum(bool(comparison.met) for comparison in judged)
    print(
        f"# end: {machine_load()}; {time.perf_counter() - started:.0f}s; "
        f"targets met: {met} of {len(judged)}"
        + (f"; benchmarks failed: {len(failures)}" if failures else ""),
        flush=True,
    )
    if args.json is not None:
        from transferlens.io import atomic_write_json

        atomic_write_json(
            args.json,
            {
                "threads": args.threads,
                "quick": args.quick,
                "torch": torch.__version__,
                "comparisons": [comparison.as_dict() for comparison in comparisons],
                "failures": failures,
            },
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
