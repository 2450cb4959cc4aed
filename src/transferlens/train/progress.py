"""What a training run shows while it works: a step bar per epoch and one line per epoch.

The bar (rich, on a terminal's stderr, gone when the epoch ends) counts the epoch's steps and shows
the running mean loss; the line (stdout) gives the epoch's metrics and an estimate of the
time left (this epoch's training and evaluation seconds times the epochs left). Only the
first process shows them, and only with ``progress=True``. Showing them never changes
what is computed: the loss shown is read from the running sum the loop keeps anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

Item = TypeVar("Item")


class EpochBar:
    """A transient bar over one epoch's ``total`` steps on a terminal's stderr; does
    nothing when not ``enabled`` or when stderr is not a terminal."""

    def __init__(self, description: str, total: int, *, enabled: bool) -> None:
        self._progress: Progress | None = None
        console = Console(stderr=True)
        if enabled and console.is_terminal:  # a log file gets the epoch lines only
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[loss]}"),
                console=console,
                transient=True,
            )
            self._task = self._progress.add_task(description, total=total, loss="")

    def steps(self, loader: Iterable[Item]) -> Iterator[Item]:
        """The loader's items, each one step of the bar; the bar goes when they run out."""
        if self._progress is None:
            yield from loader
            return
        with self._progress:
            for item in loader:
                yield item
                self._progress.advance(self._task)

    def show_loss(self, loss: float) -> None:
        """Show ``loss`` as the running mean loss (the next refresh draws it)."""
        if self._progress is not None:
            self._progress.update(self._task, loss=f"loss {loss:.4f}")


def format_duration(seconds: float) -> str:
    """``42 s``, ``3.5 min`` or ``1.2 h``: a duration as people read it in a progress line."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """``epoch k/E  test M (loss L)  train M  lr X  N img/s  S s  eta T`` for one record.

    ``eta``: ``(seconds + eval_seconds) * (E - k)``, i.e. every epoch left is assumed to
    cost what this one did (absent at epoch 0, which trains nothing, and at the last).
    """

    def shown(key: str) -> str:
        value = record.get(key)
        return "-" if value is None else f"{value:.4f}"

    line = (
        f"epoch {record['epoch']}/{epochs}  test {shown('test_metric')} "
        f"(loss {shown('test_loss')})  train {shown('train_metric')}"
    )
    if record["epoch"] > 0:
        line += (
            f"  lr {record['lr']:.3g}  {record['images_per_second']:.0f} img/s"
            f"  {record['seconds']:.1f}s"
        )
        left = epochs - record["epoch"]
        if left > 0:
            per_epoch = record["seconds"] + (record.get("eval_seconds") or 0.0)
            line += f"  eta {format_duration(per_epoch * left)}"
    return line
