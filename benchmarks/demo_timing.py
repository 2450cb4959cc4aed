"""Wall time of ``transferlens demo`` and ``transferlens demo --fast`` from scratch.

Each variant runs as a fresh ``transferlens`` process into a fresh temporary folder
(nothing reused), exactly as a user runs it. Printed per variant: wall seconds, the
CPU seconds of the demo's processes (workers included), and the load average before,
during (sampled every few seconds) and after. The demo's own workers count in the load
average (about one per core), so "during" minus the core count is roughly what the
other processes on the machine added.

The issue's budgets, on 2 CPU cores: full demo <= 600 s, ``--fast`` <= 90 s. A machine
shared with other work makes both slower; compare the load columns before trusting a
figure.

    python benchmarks/demo_timing.py              # fast, then full
    python benchmarks/demo_timing.py --only fast  # just the fast demo
    python benchmarks/demo_timing.py --keep runs/timing   # keep the study folders
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BUDGET_SECONDS = {"fast": 90.0, "full": 600.0}
SAMPLE_SECONDS = 5.0


@dataclass
class Timing:
    variant: str
    wall: float
    cpu: float
    exit_code: int
    load_before: float
    load_after: float
    load_during: list[float] = field(default_factory=list)
    summary: str = ""


def one_minute_load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_demo(variant: str, folder: Path) -> Timing:
    """Run the demo variant into ``folder`` in a fresh process and time it."""
    command = [
        sys.executable,
        "-c",
        "import sys; from transferlens.cli import main; sys.exit(main())",
        "demo",
        "--out",
        str(folder),
        "--no-progress",
    ]
    if variant == "fast":
        command.append("--fast")
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            samples.append(one_minute_load())

    sampler = threading.Thread(target=sample, daemon=True)
    load_before, cpu_before = one_minute_load(), children_cpu_seconds()
    sampler.start()
    start = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    lines = [line for line in completed.stdout.splitlines() if line.startswith("demo finished")]
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-3000:])
    return Timing(
        variant,
        wall,
        children_cpu_seconds() - cpu_before,
        completed.returncode,
        load_before,
        one_minute_load(),
        samples,
        lines[-1] if lines else "",
    )


def report(timing: Timing) -> str:
    during = timing.load_during or [float("nan")]
    budget = BUDGET_SECONDS[timing.variant]
    verdict = "within" if timing.wall <= budget else "OVER"
    return (
        f"{timing.variant:4s}  wall {timing.wall:6.1f} s ({verdict} the {budget:.0f} s budget)  "
        f"cpu {timing.cpu:6.1f} s  exit {timing.exit_code}  load before {timing.load_before:.2f} "
        f"during mean {statistics.fmean(during):.2f} max {max(during):.2f} "
        f"after {timing.load_after:.2f}  [{timing.summary}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("fast", "full"), help="time just this variant")
    parser.add_argument("--keep", help="write the study folders under this folder and keep them")
    args = parser.parse_args()
    variants = [args.only] if args.only else ["fast", "full"]
    print(f"{os.cpu_count()} cpus; python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="demo-timing-") as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        for variant in variants:
            folder = root / f"demo-{variant}"
            if folder.exists():
                sys.exit(f"{folder} exists: the timing needs a fresh folder")
            print(report(time_demo(variant, folder)), flush=True)


if __name__ == "__main__":
    main()
