"""Running one planned run, wherever it runs (a local worker, a SLURM job, torchrun).

The contract every executor relies on: :func:`execute_run` claims the run's lock
without waiting, trains only if the run is neither complete nor (unless retrying)
failed, and records any exception as the run's failure instead of raising it, so
that the other runs go on. The lock is held for the whole training and dropped by
the kernel if the process dies, so two processes never train the same run.

Every run trains with its planned CPU thread count (``PlannedRun.threads``, the
study's ``threads_per_run``) whatever process runs it, and keeps the checkpoints its
plan names (``keep_epochs``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from transferlens.study.plan import PlannedRun
from transferlens.study.store import StudyStore

OutcomeStatus = Literal["complete", "failed", "locked", "not_ready"]
EpochCallback = Callable[[int, dict[str, Any]], None]
DEFAULT_TRAIN_FUNCTION = "transferlens.train:train"


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt at a run.

    ``complete`` (``trained``: whether this attempt trained it), ``failed`` (``error``:
    one line), ``locked`` (another process holds it), ``not_ready`` (its source
    checkpoint is not there yet).
    """

    run_id: str
    status: OutcomeStatus
    error: str | None = None
    trained: bool = False
    seconds: float = 0.0


def resolve_function(reference: str | Callable[..., Any]) -> Callable[..., Any]:
    """A function from ``"package.module:name"`` (picklable across processes) or itself."""
    if callable(reference):
        return reference
    module_name, _, name = reference.partition(":")
    return getattr(importlib.import_module(module_name), name)


def execute_run(
    store: StudyStore,
    run: PlannedRun,
    *,
    retry_failed: bool = False,
    on_epoch: EpochCallback | None = None,
    train_function: str | Callable[..., Any] = DEFAULT_TRAIN_FUNCTION,
    launch: Callable[[StudyStore, PlannedRun, EpochCallback | None], None] | None = None,
) -> Outcome:
    """Claim, train and release one run (see the module docstring).

    ``launch(store, run, on_epoch)``, when given, trains the run instead of calling
    ``train_function`` in this process (the torchrun executor launches processes).
    """
    run_id = run.run_id
    lock = store.lock(run_id)
    if not lock.try_acquire():
        return Outcome(run_id, "locked")
    try:
        if store.is_complete(run_id):
            return Outcome(run_id, "complete")
        failure = store.failure(run_id)
        if failure is not None and not retry_failed:
            return Outcome(run_id, "failed", failure.get("error"))
        if run.depends_on is not None and store.checkpoint_lost(run.depends_on):
            source, epoch = run.depends_on.run_id, run.depends_on.epoch
            line = store.record_failure(
                run_id,
                f"source run {source} is complete without a checkpoint of epoch {epoch} "
                "(pruned by keep_checkpoints: needed under an earlier plan); delete "
                f"runs/{source} to train it again",
            )
            return Outcome(run_id, "failed", line)
        if run.depends_on is not None and not store.checkpoint_ready(run.depends_on):
            return Outcome(run_id, "not_ready")
        store.clear_failure(run_id)
        store.write_run_json(run)
        start = time.perf_counter()
        try:
            if launch is not None:
                launch(store, run, on_epoch)
            else:
                from transferlens.train.environment import pinned_threads

                train = resolve_function(train_function)
                spec = store.runnable_spec(run.spec)
                with pinned_threads(run.threads):
                    train(
                        spec,
                        store.run_dir(run_id),
                        progress=False,
                        on_epoch=on_epoch,
                        keep_epochs=run.keep_epochs,
                    )
        except Exception as error:  # recorded, not raised: the other runs go on
            line = store.record_failure(run_id, error)
            return Outcome(run_id, "failed", line, seconds=time.perf_counter() - start)
        if not store.is_complete(run_id):
            line = store.record_failure(run_id, "training returned without writing complete.json")
            return Outcome(run_id, "failed", line, seconds=time.perf_counter() - start)
        return Outcome(run_id, "complete", trained=True, seconds=time.perf_counter() - start)
    finally:
        lock.release()
