"""What a runner shows while it works: a live table (rich) or plain lines.

Training: the live view has one row per worker (its device, the run it trains, what
that run is, its epoch, its time left) under a line with how many runs are complete,
failed and left, the time spent and the study's time left (estimated from the epoch
times measured so far: :mod:`transferlens.study.eta` says what it assumes). Without a
terminal (or with ``--no-progress``) each start, epoch, finish and failure is one line
on stderr instead, which is what logs want; epoch lines carry the same estimates.

Analyses (:class:`AnalysisProgress`): each analysis's start and end is a line; each step
inside one (a module, a pair, a target) replaces the last on a terminal's status line,
or is a line of its own in a log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from transferlens.study.eta import StudyEta
from transferlens.study.plan import Plan
from transferlens.train.progress import format_duration


@dataclass
class _WorkerRow:
    device: str
    run_id: str = ""
    what: str = ""
    epoch: str = ""
    metric: str = ""
    eta: str = ""


class ProgressView:
    """Live status of a runner's workers (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        devices: list[str],
        *,
        live: bool | None = None,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.console = console or Console(stderr=True)
        self.live_mode = self.console.is_terminal if live is None else live
        self.rows = [_WorkerRow(device) for device in devices]
        self.complete = 0
        self.failed = 0
        self.left = len(plan)
        self._live: Live | None = None
        self._clock = clock
        self._started = clock()
        self.eta = StudyEta(plan, len(devices), clock)

    def __enter__(self) -> ProgressView:
        if self.live_mode:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
            self._live = None

    def counts(self, complete: int, failed: int, left: int) -> None:
        self.complete, self.failed, self.left = complete, failed, left
        self._refresh()

    def started(self, worker: int, run_id: str) -> None:
        meta = self.plan[run_id].meta
        epochs = self.plan[run_id].epochs
        self.eta.started(run_id)
        self.rows[worker] = _WorkerRow(
            self.rows[worker].device, run_id, meta.describe(), f"-/{epochs}"
        )
        self.note(
            f"started  {run_id} ({meta.describe()}) on {self.rows[worker].device}", live=False
        )

    def epoch(self, worker: int, run_id: str, epoch: int, metric: float | None) -> None:
        row = self.rows[worker]
        if row.run_id != run_id:
            return
        self.eta.epoch(run_id, epoch)
        row.epoch = f"{epoch}/{self.plan[run_id].epochs}"
        row.metric = "" if metric is None else f"{metric:.3f}"
        row.eta = _shown(self.eta.run_seconds_left(run_id))
        if self._live is None:
            shown = f", test metric {row.metric}" if row.metric else ""
            if row.eta:
                shown += f", run eta {row.eta}, study eta {self.study_eta() or '-'}"
            self.note(f"epoch {row.epoch} {run_id} ({row.what}){shown}", live=False)
        self._refresh()

    def study_eta(self) -> str:
        """The study's training time left, e.g. ``4.5 min`` ("" before it can be estimated)."""
        return _shown(self.eta.study_seconds_left(self.left))

    def finished(
        self, worker: int, run_id: str, status: str, error: str | None, seconds: float
    ) -> None:
        self.rows[worker] = _WorkerRow(self.rows[worker].device)
        self.eta.finished(run_id)
        if status == "failed":
            self.note(f"FAILED   {run_id}: {error}")
        elif status == "complete":
            self.note(f"finished {run_id} in {seconds:.0f} s", live=False)
        self._refresh()

    def note(self, text: str, *, live: bool = True) -> None:
        """A line of text: printed above the live table, or on stderr in plain mode."""
        if self._live is not None:
            if live:
                self._live.console.print(text, markup=False, highlight=False)
            return
        print(f"[{self.complete}/{len(self.plan)}] {text}", file=sys.stderr, flush=True)

    def _refresh(self) -> None:
        if self._live is not None:  # events are per epoch at most: draw each one at once
            self._live.update(self._render(), refresh=True)

    def _render(self) -> Group:
        spent = format_duration(self._clock() - self._started)
        header = Text(
            f"{self.complete}/{len(self.plan)} runs complete, {self.failed} failed, "
            f"{self.left} left  ({spent}, eta {self.study_eta() or '-'})",
            style="bold",
        )
        table = Table(box=None, pad_edge=False)
        for column in ("worker", "device", "run", "what", "epoch", "test metric", "eta"):
            table.add_column(column)
        for index, row in enumerate(self.rows):
            table.add_row(
                str(index),
                row.device,
                row.run_id or "idle",
                row.what,
                row.epoch,
                row.metric,
                row.eta,
            )
        return Group(header, table)


def _shown(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(seconds)


class AnalysisProgress:
    """Prints the progress of a study's analyses (see the module docstring).

    ``line(text)``: a lasting line (an analysis starts or ends); ``step(text)``: where an
    analysis is (``[analysis 7/7] criticality: real PT module 3/6 conv1``), shown on a
    terminal as one transient status line that the next step replaces, and in plain mode
    (no terminal, or ``live=False``) as a line on stderr. Use it as a context manager so
    that the status line goes away at the end.
    """

    def __init__(self, *, live: bool | None = None, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live_mode = self.console.is_terminal if live is None else live
        self._status: Live | None = None

    def __enter__(self) -> AnalysisProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)
            self._status = None

    def line(self, text: str) -> None:
        if self._status is not None:
            self._status.update(Text(""), refresh=True)  # the step it showed is over
            self._status.console.print(text, markup=False, highlight=False)
        elif self.live_mode:
            self.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def step(self, text: str) -> None:
        if not self.live_mode:
            print(text, file=sys.stderr, flush=True)
            return
        if self._status is None:
            self._status = Live(
                Text(text), console=self.console, transient=True, auto_refresh=False
            )
            self._status.__enter__()
        self._status.update(Text(text), refresh=True)


def prefixed(progress: Callable[[str], None] | None, prefix: str) -> Callable[[str], None] | None:
    """``progress`` with ``prefix`` before every line (None stays None)."""
    if progress is None:
        return None
    return lambda text: progress(prefix + text)
