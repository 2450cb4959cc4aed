"""``transferlens run``: validate, plan, train every run, write runs.csv, run the analyses.

Everything is validated before any work starts (:func:`load_study`); the plan is
written to ``study.json``; the executor trains what is not complete yet (a second
invocation on a finished study trains nothing and returns at once); ``runs.csv`` is
regenerated; once every run is complete the analyses run through the hook
``transferlens.study.analyses.run_analyses(plan, store)``. Only one process runs the
analyses of a study at a time.

Progress goes to stderr: ``announce`` (when given) gets one header line before any
work (:func:`study_header`: the study, its folder, its runs, how many run at once),
the executor shows the training (:mod:`transferlens.study.progress`), and the
analyses print their start, steps and end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transferlens.study import analyses as study_analyses
from transferlens.study.execute import DEFAULT_TRAIN_FUNCTION
from transferlens.study.executors import ExecutorOptions, make_executor
from transferlens.study.loading import default_output, load_study
from transferlens.study.locks import RunLock
from transferlens.study.plan import Plan, plan_study
from transferlens.study.progress import AnalysisProgress
from transferlens.study.runs_table import write_runs_table
from transferlens.study.scheduler import Scheduler, blocked_reason, order_ids
from transferlens.study.store import StudyStore, error_line

NO_ANALYSES = "no analyses requested"
# Worker labels named in the header line; more are counted, not listed.
HEADER_WORKERS = 4


@dataclass
class RunReport:
    """What a ``run`` invocation achieved."""

    study_dir: Path
    total: int
    complete: int
    trained: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run id -> one-line error
    blocked: dict[str, str] = field(default_factory=dict)  # run id -> why
    analyses: str = ""  # one line: what became of the analyses

    @property
    def ok(self) -> bool:
        return self.complete == self.total and not self.analyses.startswith("failed")

    @property
    def analyses_complete(self) -> bool:
        """Every run is complete and every requested analysis wrote its tables (if any)."""
        done = self.analyses.startswith("complete") or self.analyses == NO_ANALYSES
        return self.complete == self.total and done


def open_study(
    study_file: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    require_paths: bool = True,
) -> tuple[Plan, StudyStore]:
    """Validate and plan a study file; the store is where its folder is (not created)."""
    study = load_study(study_file, data_root=data_root, require_paths=require_paths)
    plan = plan_study(study, str(study_file))
    return plan, StudyStore(out if out is not None else default_output(study))


def study_header(plan: Plan, store: StudyStore, done: int, workers: str) -> str:
    """``study demo in DIR: 26 runs (3 already complete), 2 at once (cpu#0, cpu#1), then 7
    analyses``: what a ``run`` is about to do, printed before any work in every mode."""
    analyses = len(plan.study.analyses)
    then = f", then {analyses} analys{'is' if analyses == 1 else 'es'}" if analyses else ""
    return (
        f"study {plan.study.name} in {store.root}: {len(plan)} runs ({done} already complete), "
        f"{workers}{then}"
    )


def describe_workers(executor: object, name: str) -> str:
    """``2 at once (cpu#0, cpu#1)`` for an executor with worker slots, else its name."""
    slots = getattr(executor, "slots", None)  # local and torchrun have slots; slurm queues
    if not slots:
        return f"on the {name} executor"
    labels = [slot.label for slot in slots[:HEADER_WORKERS]]
    more = f", {len(slots) - HEADER_WORKERS} more" if len(slots) > HEADER_WORKERS else ""
    return f"{len(slots)} at once ({', '.join(labels)}{more})"


def run_analyses_hook(plan: Plan, store: StudyStore, progress: bool | None = None) -> str:
    """Run the analyses module on a finished study; returns a one-line note.

    ``progress``: live status line (True), plain lines (False), or live on a terminal
    (None), as :class:`~transferlens.study.progress.AnalysisProgress`.
    """
    if not plan.study.analyses:
        return NO_ANALYSES
    lock = RunLock(store.locks_dir / "analyses.lock")
    if not lock.try_acquire():
        return "skipped: another process is running the analyses of this study"
    try:
        store.write_analyses_state("running")
        try:
            with AnalysisProgress(live=progress) as shown:
                study_analyses.run_analyses(plan, store, progress=shown.line, step=shown.step)
        except Exception as error:  # noqa: BLE001 -- reported in analyses.json and the summary
            line = error_line(error)
            store.write_analyses_state("failed", line)
            return f"failed: {line}"
        store.write_analyses_state("complete")
        return f"complete (tables in {store.results_dir})"
    finally:
        lock.release()


def execute_plan(
    plan: Plan,
    store: StudyStore,
    *,
    executor: str = "local",
    devices: str | list[int | str] | None = None,
    jobs: int | None = None,
    nproc_per_node: int = 1,
    retry_failed: bool = False,
    progress: bool | None = None,
    partition: str | None = None,
    train_function: str = DEFAULT_TRAIN_FUNCTION,
    source_file: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> RunReport:
    """Train what is not complete, write runs.csv, run the analyses; see the module docstring.

    ``executor`` names one of :data:`transferlens.study.executors.EXECUTORS`;
    ``announce(line)`` hears the :func:`study_header` line before any work.
    """

    def refresh_table(run_id: str) -> None:
        write_runs_table(plan, store)  # runs.csv follows the study as runs finish

    options = ExecutorOptions(
        devices=devices,
        jobs=jobs,
        nproc_per_node=nproc_per_node,
        retry_failed=retry_failed,
        progress=progress,
        partition=partition,
        train_function=train_function,
        on_run_finished=refresh_table,
    )
    chosen = make_executor(executor, plan, options)  # bad options fail before any work
    store.root.mkdir(parents=True, exist_ok=True)
    store.write_study(plan, source_file=source_file)
    done_before = {run.run_id for run in plan if store.is_complete(run.run_id)}
    if announce is not None:
        announce(study_header(plan, store, len(done_before), describe_workers(chosen, executor)))
    scheduler = chosen.run(plan, store)
    write_runs_table(plan, store)
    report = _report(plan, store, scheduler, done_before)
    if report.complete == report.total:
        report.analyses = run_analyses_hook(plan, store, progress)
    else:
        report.analyses = "not run: some runs are not complete"
    return report


def _report(
    plan: Plan, store: StudyStore, scheduler: Scheduler, done_before: set[str]
) -> RunReport:
    scheduler.poll()
    complete = [run.run_id for run in plan if store.is_complete(run.run_id)]
    failed = {
        run_id: (store.failure(run_id) or {}).get("error", "failed")
        for run_id in order_ids(plan, scheduler.runs_with("failed"))
    }
    blocked = {
        run_id: blocked_reason(plan, run_id)
        for run_id in order_ids(plan, scheduler.runs_with("blocked"))
    }
    return RunReport(
        study_dir=store.root,
        total=len(plan),
        complete=len(complete),
        trained=[run_id for run_id in complete if run_id not in done_before],
        failed=failed,
        blocked=blocked,
    )
