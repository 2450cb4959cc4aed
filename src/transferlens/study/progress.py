"""What a runner shows while it works: a live table (rich) or plain lines.

The live view has one row per worker (its device, the run it trains, what that run
is, its epoch) under a line with how many runs are complete, failed and left. Without
a terminal (or with ``--no-progress``) each start, epoch, finish and failure is one
line on stderr instead, which is what logs want.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from transferlens.study.plan import Plan


@dataclass
class _WorkerRow:
    device: str
    run_id: str = ""
    what: str = ""
    epoch: str = ""
    metric: str = ""


class ProgressView:
    """Live status of a runner's workers (see the module docstring)."""

    def __init__(
        self,
        plan: Plan,
        devices: list[str],
        *,
        live: bool | None = None,
        console: Console | None = None,
    ) -> None:
        self.plan = plan
        self.console = console or Console(stderr=True)
        self.live_mode = self.console.is_terminal if live is None else live
        self.rows = [_WorkerRow(device) for device in devices]
        self.complete = 0
        self.failed = 0
        self.left = len(plan)
        self._live: Live | None = None
        self._started = time.monotonic()

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
        row.epoch = f"{epoch}/{self.plan[run_id].epochs}"
        row.metric = "" if metric is None else f"{metric:.3f}"
        if self._live is None:
            shown = f", test metric {row.metric}" if row.metric else ""
            self.note(f"epoch {row.epoch} {run_id} ({row.what}){shown}", live=False)
        self._refresh()

    def finished(
        self, worker: int, run_id: str, status: str, error: str | None, seconds: float
    ) -> None:
        self.rows[worker] = _WorkerRow(self.rows[worker].device)
        if status == "failed":
            self.note(f"FAILED   {run_id}: {error}")
        elif status == "complete":
            self.note(f"finished {run_id} in {seconds:.0f} s", live=False)
        self._refresh()

    def note(self, text: str, *, live: bool = True) -> None:
        """A line of text: printed above the live table, or on stderr in plain mode."""
        if self._live is not None:
            if live:
                self._live.console.print(text)
            return
        print(f"[{self.complete}/{len(self.plan)}] {text}", file=sys.stderr, flush=True)

    def _refresh(self) -> None:
        if self._live is not None:  # events are per epoch at most: draw each one at once
            self._live.update(self._render(), refresh=True)

    def _render(self) -> Group:
        minutes = (time.monotonic() - self._started) / 60
        header = Text(
            f"{self.complete}/{len(self.plan)} runs complete, {self.failed} failed, "
            f"{self.left} left  ({minutes:.1f} min)",
            style="bold",
        )
        table = Table(box=None, pad_edge=False)
        for column in ("worker", "device", "run", "what", "epoch", "test metric"):
            table.add_column(column)
        for index, row in enumerate(self.rows):
            table.add_row(
                str(index), row.device, row.run_id or "idle", row.what, row.epoch, row.metric
            )
        return Group(header, table)
