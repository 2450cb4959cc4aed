"""The local executor: a pool of worker processes, each pinned to a device.

Slots come from ``--devices`` and ``--jobs``: ``cpu`` gives ``jobs`` CPU workers
(default: cores // the study's ``threads_per_run``), ``0,1,2,3`` gives ``jobs`` workers
per GPU (default 1); ``--nproc-per-node N`` makes each slot a group of N devices (N
processes) whose runs go through torchrun (as every run does with the ``torchrun``
executor, :class:`~transferlens.study.executors.torchrun.TorchrunExecutor`). Each
worker sees only its devices (``CUDA_VISIBLE_DEVICES``, empty for CPU workers, so that
the specs keep ``device: auto`` and resume anywhere) and each training process uses
the study's ``threads_per_run`` threads, however many workers share the machine: the
thread count changes a run's numbers, the number of workers must not.

Workers are spawned (safe with CUDA), die with the runner (``PR_SET_PDEATHSIG``) and
talk to it over one pipe each, so a worker that dies mid-message breaks only its own
pipe. The runner keeps the run graph's order with :class:`Scheduler`; workers claim
runs through the run locks (:func:`execute_run`), so several runners can share a
study. A worker that dies while training has its run recorded as failed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from transferlens.errors import UserInputError
from transferlens.study.execute import Outcome, execute_run
from transferlens.study.executors.processes import die_with_parent
from transferlens.study.executors.protocol import ExecutorOptions, open_scheduler
from transferlens.study.plan import Plan
from transferlens.study.progress import ProgressView
from transferlens.study.scheduler import Scheduler
from transferlens.study.store import StudyStore

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Slot:
    """One worker: a label for humans, the devices it may see and its CPU threads."""

    index: int
    label: str
    visible_devices: str  # CUDA_VISIBLE_DEVICES of the worker ("" = no GPU)
    threads: int
    nproc: int = 1


def _gpu_ids(devices: str | list[int | str]) -> list[str]:
    items = devices if isinstance(devices, list) else str(devices).split(",")
    ids = [str(item).strip().removeprefix("cuda:") for item in items if str(item).strip()]
    if not ids or not all(item.isdigit() for item in ids):
        raise UserInputError(
            f"--devices: expected cpu, auto or GPU indices like 0,1 (got {devices!r})"
        )
    return ids


def make_slots(
    devices: str | list[int | str] | None,
    jobs: int | None = None,
    nproc_per_node: int = 1,
    threads_per_run: int | None = None,
) -> list[Slot]:
    """The worker slots for ``--devices``/``--jobs``/``--nproc-per-node`` (module docstring).

    ``threads_per_run``: each training process's threads (a study's setting); None
    shares the cores among the workers (cores // processes), as outside a study.
    """
    import torch

    cores = os.cpu_count() or 1
    if jobs is not None and jobs < 1:
        raise UserInputError(f"--jobs: must be at least 1 (got {jobs})")
    if nproc_per_node < 1:
        raise UserInputError(f"--nproc-per-node: must be at least 1 (got {nproc_per_node})")
    if devices in (None, "auto", "cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if devices == "cuda" and not count:  # asked for, absent: never a silent CPU run
            raise UserInputError("--devices: 'cuda' requested but CUDA is not available")
        devices = [str(i) for i in range(count)] if count else "cpu"
    if devices == "cpu":
        per_process = threads_per_run or max(1, torch.get_num_threads())
        count = jobs or max(1, cores // (per_process * nproc_per_node))
        threads = threads_per_run or max(1, cores // (count * nproc_per_node))
        return [Slot(i, f"cpu#{i}", "", threads, nproc_per_node) for i in range(count)]
    ids = _gpu_ids(devices)  # type: ignore[arg-type]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = visible.split(",") if visible else None
    available = torch.cuda.device_count()
    for gpu in ids:
        if int(gpu) >= available:
            raise UserInputError(f"--devices: GPU {gpu} is not available ({available} visible)")
    if len(ids) % nproc_per_node:
        raise UserInputError(
            f"--nproc-per-node: {nproc_per_node} does not divide the {len(ids)} devices given"
        )
    groups = [ids[i : i + nproc_per_node] for i in range(0, len(ids), nproc_per_node)]
    per_group = jobs or 1
    threads = threads_per_run or max(1, cores // (len(groups) * per_group * nproc_per_node))
    slots = []
    for group in groups:
        names = [physical[int(g)] if physical else g for g in group]
        for _ in range(per_group):
            label = "cuda:" + ",".join(group)
            slots.append(Slot(len(slots), label, ",".join(names), threads, nproc_per_node))
    return slots


def _worker_main(
    slot: Slot,
    study_dir: str,
    connection: Connection,
    retry_failed: bool,
    train_function: str,
    parent_pid: int,
    use_torchrun: bool,
) -> None:
    """Loop: receive a run, execute it, report epochs and the outcome; None = stop."""
    die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when workers stop
    import torch

    torch.set_num_threads(slot.threads)
    store = StudyStore(study_dir)
    launch = None
    if use_torchrun or slot.nproc > 1:
        from transferlens.study.executors.torchrun import torchrun_launcher

        launch = torchrun_launcher(slot.nproc)
    while True:
        run = connection.recv()
        if run is None:
            return

        def on_epoch(epoch: int, record: dict[str, Any], run_id: str = run.run_id) -> None:
            connection.send(("epoch", run_id, epoch, record.get("test_metric")))

        outcome = execute_run(
            store,
            run,
            retry_failed=retry_failed,
            on_epoch=on_epoch,
            train_function=train_function,
            launch=launch,
        )
        connection.send(("done", asdict(outcome)))


@contextmanager
def _environment(**values: str):
    """Set environment variables while a child process is spawned (it copies them)."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Worker:
    def __init__(
        self,
        slot: Slot,
        study_dir: Path,
        retry_failed: bool,
        train_function: str,
        use_torchrun: bool,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.slot = slot
        self.connection, child = context.Pipe()
        args = (
            slot,
            str(study_dir),
            child,
            retry_failed,
            train_function,
            os.getpid(),
            use_torchrun,
        )
        self.process = context.Process(target=_worker_main, args=args, daemon=True)
        threads = str(slot.threads)
        with _environment(
            CUDA_VISIBLE_DEVICES=slot.visible_devices,
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
        ):
            self.process.start()
        child.close()
        self.run_id: str | None = None

    def stop(self) -> None:
        if self.process.is_alive():
            with suppress(OSError):
                self.connection.send(None)
            self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class LocalExecutor:
    """Runs a plan's runs on local worker processes (see the module docstring)."""

    # Whether every run is launched through torchrun, not only multi-device slots' runs.
    always_torchrun = False

    @classmethod
    def from_options(cls, plan: Plan, options: ExecutorOptions) -> LocalExecutor:
        """The executor for ``transferlens run``'s options (devices/jobs: else the study's)."""
        devices = options.devices if options.devices is not None else plan.study.devices
        slots = make_slots(
            devices,
            options.jobs or plan.study.jobs,
            options.nproc_per_node,
            threads_per_run=plan.study.threads_per_run,
        )
        return cls(slots, options)

    def __init__(self, slots: list[Slot], options: ExecutorOptions | None = None) -> None:
        self.slots = slots
        self.options = options if options is not None else ExecutorOptions()

    def run(self, plan: Plan, store: StudyStore) -> Scheduler:
        """Run every runnable run of ``plan``; returns the final scheduler view."""
        scheduler = open_scheduler(plan, store, self.options)
        if scheduler.finished():
            return scheduler
        workers: list[_Worker | None] = [None] * len(self.slots)
        view = ProgressView(plan, [slot.label for slot in self.slots], live=self.options.progress)
        try:
            with view:
                self._loop(plan, store, scheduler, workers, view)
        finally:
            for worker in workers:
                if worker is not None:
                    worker.stop()
        return scheduler

    def _loop(
        self,
        plan: Plan,
        store: StudyStore,
        scheduler: Scheduler,
        workers: list[_Worker | None],
        view: ProgressView,
    ) -> None:
        while True:
            for index, slot in enumerate(self.slots):
                worker = workers[index]
                if worker is not None and worker.run_id is not None:
                    continue
                ready = scheduler.ready()
                if not ready:
                    break
                if worker is None:
                    worker = workers[index] = _Worker(
                        slot,
                        store.root,
                        self.options.retry_failed,
                        self.options.train_function,
                        self.always_torchrun,
                    )
                run = ready[0]
                scheduler.start(run.run_id)
                worker.run_id = run.run_id
                worker.connection.send(run)
                view.started(index, run.run_id)
            complete = scheduler.count("complete")
            failed = scheduler.count("failed", "blocked")
            view.counts(complete, failed, len(plan) - complete - failed)
            if scheduler.finished():
                return
            self._wait(store, scheduler, workers, view)
            scheduler.poll()

    def _wait(
        self,
        store: StudyStore,
        scheduler: Scheduler,
        workers: list[_Worker | None],
        view: ProgressView,
    ) -> None:
        live = [w for w in workers if w is not None]
        handles: list[Any] = [w.connection for w in live] + [w.process.sentinel for w in live]
        for handle in wait(handles, timeout=POLL_SECONDS):
            worker = next(w for w in live if handle in (w.connection, w.process.sentinel))
            if handle is worker.connection:
                self._receive(worker, scheduler, view)
        for index, worker in enumerate(workers):
            if worker is not None and not worker.process.is_alive():
                self._bury(index, worker, store, scheduler, view)
                workers[index] = None

    def _receive(self, worker: _Worker, scheduler: Scheduler, view: ProgressView) -> None:
        try:
            while worker.connection.poll():
                message = worker.connection.recv()
                if message[0] == "epoch":
                    _, run_id, epoch, metric = message
                    view.epoch(worker.slot.index, run_id, epoch, metric)
                elif message[0] == "done":
                    outcome = Outcome(**message[1])
                    scheduler.finish(outcome.run_id)
                    if outcome.status in ("locked", "not_ready"):
                        scheduler.attempted.discard(outcome.run_id)  # not a try: may retry
                    view.finished(
                        worker.slot.index,
                        outcome.run_id,
                        outcome.status,
                        outcome.error,
                        outcome.seconds,
                    )
                    worker.run_id = None
        except (EOFError, OSError):
            pass  # the worker died; _bury handles it

    def _bury(
        self,
        index: int,
        worker: _Worker,
        store: StudyStore,
        scheduler: Scheduler,
        view: ProgressView,
    ) -> None:
        """A worker process ended by itself: record its run as failed (it was killed)."""
        self._receive(worker, scheduler, view)
        run_id = worker.run_id
        if run_id is None:
            return
        scheduler.finish(run_id)
        code = worker.process.exitcode
        if not store.is_complete(run_id):
            reason = f"worker process died (exit code {code}) while training"
            if code is not None and code < 0:
                reason += f" (signal {signal.Signals(-code).name})"
            line = store.record_failure(run_id, reason)
            view.finished(index, run_id, "failed", line, 0.0)
