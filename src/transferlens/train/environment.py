"""Where a run computed its numbers: CPU threads, device, torch version, process count.

The same spec gives bit-identical numbers only in the same environment: the CPU
kernels split their sums by thread (a different count adds in another order), each
processor family and GPU model has its own kernels, and each torch version its own
implementations. So a run folder records its environment in ``environment.json``,
one *segment* per stretch of epochs trained in one environment::

    {"segments": [{"from_epoch": 0, "threads": 1, "device": "cpu (AVX2)",
                   "torch": "2.5.1", "world_size": 1}]}

A resumed run appends a segment only where its environment differs. A resume under
another thread count is refused (:func:`check_resume_threads`): within a study the
count is pinned (``threads_per_run``), so a different one means a changed setting or
launcher, and going on would silently mix two results under one run id. Other
changes (device, torch version) are allowed, as resuming elsewhere is by design;
they are recorded, and ``transferlens status`` flags a study whose runs mix
environments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from transferlens.errors import UserInputError
from transferlens.io import atomic_write_json

ENVIRONMENT_FILE = "environment.json"


@dataclass(frozen=True)
class Environment:
    """What decides a run's numbers besides its spec (one segment of environment.json)."""

    threads: int
    device: str  # "cpu (AVX2)", "cuda (NVIDIA H100 80GB HBM3)", "mps"
    torch: str
    world_size: int = 1

    def describe(self) -> str:
        """E.g. ``cpu (AVX2), 1 thread, torch 2.5.1``; process count when above one."""
        words = [self.device, f"{self.threads} thread{'s' if self.threads != 1 else ''}"]
        if self.world_size != 1:
            words.append(f"{self.world_size} processes")
        words.append(f"torch {self.torch}")
        return ", ".join(words)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Environment:
        return cls(
            threads=int(data["threads"]),
            device=str(data["device"]),
            torch=str(data["torch"]),
            world_size=int(data.get("world_size", 1)),
        )


def device_label(device: torch.device) -> str:
    """The device kind with what picks its kernels: the CPU's instruction set or the GPU model."""
    if device.type == "cpu":
        return f"cpu ({torch.backends.cpu.get_cpu_capability()})"
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def current_environment(device: torch.device, world_size: int = 1) -> Environment:
    """This process's environment for a run on ``device`` (threads: ``torch.get_num_threads``)."""
    return Environment(torch.get_num_threads(), device_label(device), torch.__version__, world_size)


def read_segments(run_dir: str | os.PathLike) -> list[tuple[int, Environment]]:
    """``[(from_epoch, environment), ...]`` of a run folder ([] when none was recorded:
    a folder written before environments were, or an unreadable file)."""
    path = Path(run_dir) / ENVIRONMENT_FILE
    if not path.is_file():
        return []
    try:
        segments = json.loads(path.read_text(encoding="utf-8"))["segments"]
        return [(int(s["from_epoch"]), Environment.from_json(s)) for s in segments]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def record_environment(
    run_dir: str | os.PathLike, from_epoch: int, environment: Environment, *, fresh: bool
) -> None:
    """Start environment.json (``fresh``) or append a segment where the environment changed."""
    segments = [] if fresh else read_segments(run_dir)
    if segments and segments[-1][1] == environment:
        return
    segments.append((from_epoch, environment))
    data = {"segments": [{"from_epoch": epoch, **asdict(env)} for epoch, env in segments]}
    atomic_write_json(Path(run_dir) / ENVIRONMENT_FILE, data)


def check_resume_threads(run_dir: str | os.PathLike, threads: int) -> None:
    """Refuse to resume a run trained with another CPU thread count (module docstring)."""
    segments = read_segments(run_dir)
    if not segments:
        return  # trained before environments were recorded: nothing to compare with
    recorded = segments[-1][1].threads
    if recorded != threads:
        raise UserInputError(
            f"{Path(run_dir) / ENVIRONMENT_FILE}: the run was trained with {recorded} CPU "
            f"thread(s) and would resume with {threads}, which changes its numbers; resume "
            f"with {recorded} (a study's threads_per_run: {recorded}; else "
            f"OMP_NUM_THREADS={recorded}) or delete the run folder"
        )


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the previous count after it
    (None: leave the count alone)."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
