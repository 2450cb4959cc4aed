"""What every executor is: something that trains a plan's missing runs into a store.

An executor claims runs through :func:`transferlens.study.execute.execute_run` (so
run locks keep any two executors from training one run), keeps the run graph's
order with a :class:`~transferlens.study.scheduler.Scheduler` and returns it once
nothing more can run. :data:`transferlens.study.executors.EXECUTORS` names them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from transferlens.study.execute import DEFAULT_TRAIN_FUNCTION
from transferlens.study.scheduler import Scheduler

if TYPE_CHECKING:
    from transferlens.study.plan import Plan
    from transferlens.study.store import StudyStore


class Executor(Protocol):
    """Trains the runs of ``plan`` that are not complete; returns the final scheduler view."""

    def run(self, plan: Plan, store: StudyStore) -> Scheduler: ...


@dataclass(frozen=True)
class ExecutorOptions:
    """The ``transferlens run`` options an executor may use (each ignores the others).

    ``devices``/``jobs`` default to the study's; ``on_run_finished(run_id)`` is called
    whenever a run ends (the runner refreshes runs.csv).
    """

    devices: str | list[int | str] | None = None
    jobs: int | None = None
    nproc_per_node: int = 1
    retry_failed: bool = False
    progress: bool | None = None
    partition: str | None = None
    train_function: str = DEFAULT_TRAIN_FUNCTION
    on_run_finished: Callable[[str], None] | None = None


ExecutorFactory = Callable[["Plan", ExecutorOptions], Executor]


def open_scheduler(plan: Plan, store: StudyStore, options: ExecutorOptions) -> Scheduler:
    """The scheduler an executor follows, polled once (``finished()``: nothing to do)."""
    scheduler = Scheduler(
        plan, store, retry_failed=options.retry_failed, on_finish=options.on_run_finished
    )
    scheduler.poll()
    return scheduler
