"""Shared pieces of the benchmarks: peers on the path, timing, peak memory, result lines.

Timing: ``torch.set_num_threads(threads)``, one warm-up, then the median of a few
repeats; contenders are interleaved (repeat r of every contender before repeat r + 1)
so that a change in machine load hits all of them alike. Ratios are always
``peer time / our time`` measured in the same process.

Peak memory: ``tracemalloc`` does not see torch's allocations, so each contender runs
once more in a fresh subprocess (``--worker``). After its set-up (imports, models,
data) the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), and after the
run ``VmHWM`` is read: ``peak`` is the highest resident set size during the run,
``extra`` how far it rose above the RSS at the start of the run.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
# Where `pip install --no-deps --target benchmarks/.peers -r benchmarks/requirements.txt`
# puts the peers; TRANSFERLENS_BENCH_PEERS may name other folders (os.pathsep-separated).
PEERS_DIR = BENCH_DIR / ".peers"
WORKER_MARK = "BENCH-WORKER-RESULT "


def add_peers_to_path() -> None:
    """Put the peers' install folders (if present) in front of ``sys.path``."""
    extra = [p for p in os.environ.get("TRANSFERLENS_BENCH_PEERS", "").split(os.pathsep) if p]
    for folder in [*extra, str(PEERS_DIR)]:
        if Path(folder).is_dir() and folder not in sys.path:
            sys.path.insert(0, folder)


def machine_load() -> str:
    """``load 1.23 0.98 0.50 on 2 cpus``: the conditions the numbers were taken in."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load unknown"
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cpus"


# -- timing ---------------------------------------------------------------------------


@dataclass
class Timed:
    """Times of one contender (seconds, in run order) and the value its last run returned."""

    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    value: Any = None
    error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_times) if self.cpu_times else float("nan")


def time_once(run: Callable[[], Any]) -> tuple[float, Any]:
    seconds, _, value = time_with_cpu(run)
    return seconds, value


def time_with_cpu(run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall-clock and process CPU seconds (all threads) of one call, and its value.

    On a loaded machine the wall clock measures the neighbours as much as the code;
    the CPU time is the steadier of the two (it still counts spinning worker threads).
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    value = run()
    return time.perf_counter() - start, time.process_time() - start_cpu, value


def time_interleaved(
    contenders: dict[str, Callable[[], Callable[[], Any]]], repeats: int
) -> dict[str, Timed]:
    """Time each contender ``repeats`` times, round-robin.

    ``contenders[name]()`` prepares one run (untimed, e.g. fresh model copies) and
    returns the callable that is timed. A contender that raises is recorded once with
    its error (``Type: message``) and not retried.
    """
    results = {name: Timed() for name in contenders}
    for _ in range(repeats):
        for name, prepare in contenders.items():
            result = results[name]
            if result.error is not None:
                continue
            try:
                seconds, cpu_seconds, value = time_with_cpu(prepare())
            except Exception as error:  # a peer failing is a result, not a crash
                result.error = describe_error(error)
                continue
            result.times.append(seconds)
            result.cpu_times.append(cpu_seconds)
            result.value = value
    return results


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 120 characters)."""
    lines = str(error).splitlines() or [""]
    return f"{type(error).__name__}: {lines[0][:120]}"


# -- peak memory ----------------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        match = re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure_run_memory(run: Callable[[], Any]) -> dict[str, float]:
    """Run once with the peak-RSS mark reset first: seconds, peak and extra MiB."""
    import gc

    gc.collect()
    resettable = reset_peak_rss()
    start_kib = _status_kib("VmRSS")
    seconds, _ = time_once(run)
    peak_kib = _status_kib("VmHWM")
    if not resettable:  # the peak then includes the set-up; say so through extra = nan
        return {"seconds": seconds, "peak_mib": peak_kib / 1024, "extra_mib": float("nan")}
    return {
        "seconds": seconds,
        "peak_mib": peak_kib / 1024,
        "extra_mib": (peak_kib - start_kib) / 1024,
    }


def report_worker_result(result: dict[str, Any]) -> None:
    """Print a worker's result as the one line :func:`run_worker` looks for."""
    print(WORKER_MARK + json.dumps(result), flush=True)


def run_worker(script: Path, args: Sequence[str], timeout: float = 900) -> dict[str, Any]:
    """Run ``python script --worker ...args`` in a fresh process and return its result."""
    command = [sys.executable, str(script), "--worker", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(WORKER_MARK):
            return json.loads(line[len(WORKER_MARK) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"worker exited {done.returncode}: {tail[0][:160]}"}


# -- result lines ---------------------------------------------------------------------


@dataclass
class Comparison:
    """One line of the report: ours against one peer (or baseline) on the same inputs.

    ``ratio`` is ``peer_seconds / ours_seconds`` (medians) unless the comparison says
    otherwise (``ratio_label``); ``best_ratio`` the same from each side's fastest
    repeat, the steadier figure on a loaded machine; ``diff`` is the largest absolute
    difference of the values that were checked against each other (None: nothing to
    compare).
    """

    name: str
    peer: str
    ours_seconds: float
    peer_seconds: float
    target: str
    met: bool | None  # None: nothing to judge (the peer does not run)
    ratio: float | None = None
    ratio_label: str = "peer/ours time"
    diff: float | None = None
    peer_diff: float | None = None
    ours_peak_mib: float | None = None
    peer_peak_mib: float | None = None
    ours_extra_mib: float | None = None
    peer_extra_mib: float | None = None
    ours_cpu_seconds: float | None = None
    peer_cpu_seconds: float | None = None
    best_ratio: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.ours_seconds > 0:
            self.ratio = self.peer_seconds / self.ours_seconds

    def line(self) -> str:
        def seconds(value: float) -> str:
            return "-" if value != value else f"{value:.3f}s"

        def mib(peak: float | None, extra: float | None) -> str:
            if peak is None:
                return "-"
            text = f"{peak:.0f}"
            return text if extra is None or extra != extra else f"{text}(+{extra:.0f})"

        parts = [
            f"{self.name:<30}",
            f"vs {self.peer:<26}",
            f"ours {seconds(self.ours_seconds):>9}",
            f"peer {seconds(self.peer_seconds):>9}",
            f"ratio {_ratio(self.ratio):>7} ({self.ratio_label})",
        ]
        if self.best_ratio is not None:
            parts.append(f"best-of ratio {_ratio(self.best_ratio)}")
        if self.ours_cpu_seconds and self.peer_cpu_seconds:
            parts.append(f"cpu-time ratio {_ratio(self.peer_cpu_seconds / self.ours_cpu_seconds)}")
        if self.diff is not None:
            parts.append(f"max|diff| {self.diff:.1e}")
        if self.peer_diff is not None:
            parts.append(f"peer-off {self.peer_diff:.1e}")
        if self.ours_peak_mib is not None or self.peer_peak_mib is not None:
            parts.append(
                f"peak MiB ours {mib(self.ours_peak_mib, self.ours_extra_mib)}"
                f" peer {mib(self.peer_peak_mib, self.peer_extra_mib)}"
            )
        verdict = "n/a" if self.met is None else "yes" if self.met else "NO"
        parts.append(f"target {self.target}: {verdict}")
        if self.note:
            parts.append(f"({self.note})")
        return " | ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    return f"{value:.2f}x"


def print_lines(comparisons: Sequence[Comparison]) -> None:
    for comparison in comparisons:
        print(comparison.line(), flush=True)


def max_abs_diff(a: Any, b: Any) -> float:
    """Largest ``|a - b|`` over two arrays of the same shape (NaN where both are NaN: 0)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    return float(np.max(diff)) if diff.size else 0.0
