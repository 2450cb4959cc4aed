"""``transferlens run``: validate, plan, train every run, write runs.csv, run the analyses.

Everything is validated before any work starts (:func:`load_study`); the plan is
written to ``study.json``; the executor trains what is not complete yet (a second
invocation on a finished study trains nothing and returns at once); ``runs.csv`` is
regenerated; once every run is complete the analyses run through the hook
``transferlens.study.analyses.run_analyses(plan, store)``. Only one process runs the
analyses of a study at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from transferlens.study import analyses as study_analyses
from transferlens.study.execute import DEFAULT_TRAIN_FUNCTION
from transferlens.study.executors import ExecutorOptions, make_executor
from transferlens.study.loading import default_output, load_study
from transferlens.study.locks import RunLock
from transferlens.study.plan import Plan, plan_study
from transferlens.study.runs_table import write_runs_table
from transferlens.study.scheduler import Scheduler, blocked_reason, order_ids
from transferlens.study.store import StudyStore, error_line


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


def _say(line: str) -> None:
    print(line, flush=True)


def run_analyses_hook(plan: Plan, store: StudyStore) -> str:
    """Run the analyses module on a finished study; returns a one-line note."""
    if not plan.study.analyses:
        return "no analyses requested"
    lock = RunLock(store.locks_dir / "analyses.lock")
    if not lock.try_acquire():
        return "skipped: another process is running the analyses of this study"
    try:
        store.write_analyses_state("running")
        try:
            study_analyses.run_analyses(plan, store, progress=_say)
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
) -> RunReport:
    """Train what is not complete, write runs.csv, run the analyses; see the module docstring.

    ``executor`` names one of :data:`transferlens.study.executors.EXECUTORS`.
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
    scheduler = chosen.run(plan, store)
    write_runs_table(plan, store)
    report = _report(plan, store, scheduler, done_before)
    if report.complete == report.total:
        report.analyses = run_analyses_hook(plan, store)
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
