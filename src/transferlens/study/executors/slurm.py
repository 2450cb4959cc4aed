"""The SLURM executor: every run is one job, submitted in job arrays through submitit.

Runs whose dependencies are met are submitted together as one array per resource
set (``slurm`` in the study: the defaults, and ``slurm.pretrain`` for the source
run); the client polls the jobs (one ``sacct`` call per poll for all of them),
submits newly ready runs as their source checkpoints appear, and returns when nothing
is left. Each job runs :func:`execute_run`, so the run locks keep SLURM jobs, local
runners and a restarted client from ever training one run twice.

A job is :class:`submitit.helpers.Checkpointable`: on timeout or preemption submitit
requeues it and the run resumes from its last checkpoint. A job that ends without a
result (``scancel``, node failure) leaves its run recorded as failed with the job's
final state as the reason (``SLURM job 42_3 ended CANCELLED by 0``); ``--retry-failed``
submits it again. Job ids are kept in ``<study>/slurm/jobs.json`` so a restarted
client re-attaches to jobs still queued or running instead of submitting them again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import asdict
from typing import Any

from transferlens.errors import UserInputError
from transferlens.io import atomic_write_json
from transferlens.study.execute import Outcome, execute_run
from transferlens.study.executors.protocol import ExecutorOptions, open_scheduler
from transferlens.study.plan import Plan, PlannedRun
from transferlens.study.progress import ProgressView
from transferlens.study.scheduler import Scheduler
from transferlens.study.spec import SlurmResources, SlurmSettings
from transferlens.study.store import StudyStore

POLL_SECONDS = 2.0
RESULT_GRACE_SECONDS = 30.0  # a COMPLETED job's result file may lag behind sacct
JOBS_FILE = "jobs.json"
ACTIVE_STATES = (
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "CONFIGURING",
    "COMPLETING",
    "RESIZING",
    "SUSPENDED",
    "UNKNOWN",
)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _left_queue(job_id: str) -> bool:
    """Whether SLURM's queue no longer holds ``job_id`` (False when squeue cannot tell)."""
    try:
        result = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", job_id], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if result.returncode != 0:
        return "Invalid job id" in result.stderr
    return not result.stdout.strip()


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserInputError(
            "--executor slurm needs submitit (pip install 'transferlens[slurm]')"
        ) from None
    return submitit


class RunJob:
    """The function a SLURM job runs: :func:`execute_run` on one run (requeueable)."""

    def __call__(self, study_dir: str, run: PlannedRun, retry_failed: bool) -> dict[str, Any]:
        # submitit ignores SIGTERM (scancel, preemption) and trains on until SIGKILL: stop at
        # once instead; the run resumes from its last checkpoint when run again or requeued.
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        # Threads: execute_run pins the run's planned count (threads_per_run), not the
        # job's cpus_per_task, so a run's numbers do not depend on the job's size.
        outcome = execute_run(StudyStore(study_dir), run, retry_failed=retry_failed)
        return asdict(outcome)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same call: training resumes from the run's last checkpoint."""
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)


def _make_checkpointable() -> type:
    submitit = _submitit()
    return type("CheckpointableRunJob", (RunJob, submitit.helpers.Checkpointable), {})


class SlurmExecutor:
    """Submit and follow a plan's runs on SLURM (see the module docstring)."""

    @classmethod
    def from_options(cls, plan: Plan, options: ExecutorOptions) -> SlurmExecutor:
        """The executor for ``transferlens run``'s options and the study's ``slurm`` settings."""
        return cls(plan.study.slurm, options)

    def __init__(
        self,
        settings: SlurmSettings,
        options: ExecutorOptions | None = None,
        *,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.settings = settings
        self.options = options if options is not None else ExecutorOptions()
        self.poll_seconds = poll_seconds

    def _executor(self, store: StudyStore, resources: SlurmResources) -> Any:
        submitit = _submitit()
        executor = submitit.SlurmExecutor(
            folder=str(store.root / "slurm" / "%j"), max_num_timeout=10
        )
        parameters: dict[str, Any] = {
            "time": resources.time_minutes,
            "cpus_per_task": resources.cpus_per_task,
            "array_parallelism": self.settings.array_parallelism,
            "job_name": f"transferlens-{store.root.name}",
        }
        partition = self.options.partition or resources.partition
        if partition:
            parameters["partition"] = partition
        if resources.gpus_per_task:
            parameters["gpus_per_task"] = resources.gpus_per_task
        if resources.mem_gb:
            parameters["mem"] = f"{int(resources.mem_gb * 1024)}MB"
        additional = {"requeue": True, **resources.additional}
        parameters["additional_parameters"] = additional
        executor.update_parameters(**parameters)
        return executor

    def _resources(self, run: PlannedRun) -> SlurmResources:
        if run.meta.kind == "source" and self.settings.pretrain is not None:
            return self.settings.pretrain
        return self.settings

    def run(self, plan: Plan, store: StudyStore) -> Scheduler:
        """Submit every runnable run and follow the jobs until nothing is left."""
        scheduler = open_scheduler(plan, store, self.options)
        if scheduler.finished():
            return scheduler
        job_class = _make_checkpointable()
        active: dict[str, Any] = self._reattach(plan, store, scheduler)
        view = ProgressView(plan, [], live=self.options.progress)
        with view:
            while True:
                scheduler.poll()
                ready = [run for run in scheduler.ready() if run.run_id not in active]
                if ready:
                    self._submit(ready, store, scheduler, active, job_class, view)
                complete = scheduler.count("complete")
                failed = scheduler.count("failed", "blocked")
                view.counts(complete, failed, len(plan) - complete - failed)
                if scheduler.finished():
                    return scheduler
                time.sleep(self.poll_seconds)
                self._collect(store, scheduler, active, view)

    def _submit(
        self,
        ready: list[PlannedRun],
        store: StudyStore,
        scheduler: Scheduler,
        active: dict[str, Any],
        job_class: type,
        view: ProgressView,
    ) -> None:
        groups: dict[int, tuple[SlurmResources, list[PlannedRun]]] = {}
        for run in ready:
            resources = self._resources(run)
            groups.setdefault(id(resources), (resources, []))[1].append(run)
        for resources, runs in groups.values():
            executor = self._executor(store, resources)
            with executor.batch():
                jobs = [
                    executor.submit(job_class(), str(store.root), run, self.options.retry_failed)
                    for run in runs
                ]
            for run, job in zip(runs, jobs):
                scheduler.start(run.run_id)
                active[run.run_id] = job
                view.note(
                    f"submitted {run.run_id} ({run.meta.describe()}) as SLURM job {job.job_id}"
                )
        self._save_jobs(store, active)

    def _collect(
        self, store: StudyStore, scheduler: Scheduler, active: dict[str, Any], view: ProgressView
    ) -> None:
        if not active:
            return
        next(iter(active.values())).get_info(mode="force")  # one sacct call refreshes every job
        for run_id, job in list(active.items()):
            outcome = self._finished(job, run_id, store)
            if outcome is None:
                continue
            del active[run_id]
            scheduler.finish(run_id)
            if outcome.status in ("locked", "not_ready"):
                scheduler.attempted.discard(run_id)
            detail = f": {outcome.error}" if outcome.error else ""
            view.note(f"{outcome.status:<8} {run_id}{detail}")
        self._save_jobs(store, active)

    def _finished(self, job: Any, run_id: str, store: StudyStore) -> Outcome | None:
        """The outcome of a finished job, or None while it is queued or running."""
        if job.paths.result_pickle.exists():
            try:
                return Outcome(**job.result())
            except Exception as error:  # the job raised outside execute_run
                line = store.record_failure(run_id, f"SLURM job {job.job_id} failed: {error}")
                return Outcome(run_id, "failed", line)
        if store.is_running(run_id):
            return None  # the job's process still holds the run (e.g. winding down after scancel)
        state = job.watcher.get_state(job.job_id, mode="cache")
        if state == "UNKNOWN" and _left_queue(job.job_id):
            # An array task cancelled while pending leaves no accounting record at all.
            reason = (
                "was CANCELLED before it started (it left the queue without an accounting record)"
            )
        else:
            still_active = not state or state.split()[0] in ACTIVE_STATES
            if still_active or (state.startswith("COMPLETED") and not self._result_overdue(job)):
                return None
            reason = f"ended {state} before the run completed"
        if store.is_complete(run_id):
            return Outcome(run_id, "complete")
        line = store.record_failure(run_id, f"SLURM job {job.job_id} {reason}")
        return Outcome(run_id, "failed", line)

    @staticmethod
    def _result_overdue(job: Any) -> bool:
        """A COMPLETED job's result file may appear after sacct says so: wait a little."""
        first_seen = getattr(job, "_transferlens_completed_at", None)
        if first_seen is None:
            job._transferlens_completed_at = first_seen = time.monotonic()
        return time.monotonic() - first_seen >= RESULT_GRACE_SECONDS

    def _save_jobs(self, store: StudyStore, active: dict[str, Any]) -> None:
        atomic_write_json(
            store.root / "slurm" / JOBS_FILE, {run_id: job.job_id for run_id, job in active.items()}
        )

    def _reattach(self, plan: Plan, store: StudyStore, scheduler: Scheduler) -> dict[str, Any]:
        """Jobs of an earlier client that are still queued or running, by run id."""
        path = store.root / "slurm" / JOBS_FILE
        if not path.is_file():
            return {}
        submitit = _submitit()
        recorded = json.loads(path.read_text(encoding="utf-8"))
        active: dict[str, Any] = {}
        for run_id, job_id in recorded.items():
            if run_id not in plan.runs or store.is_complete(run_id):
                continue
            job = submitit.SlurmJob(folder=str(store.root / "slurm" / "%j"), job_id=job_id)
            active[run_id] = job
        if active:
            next(iter(active.values())).get_info(mode="force")
        for run_id, job in list(active.items()):
            state = job.watcher.get_state(job.job_id, mode="cache")
            if not state or state.split()[0] not in ACTIVE_STATES[:-1]:
                del active[run_id]
            else:
                scheduler.start(run_id)
        return active
