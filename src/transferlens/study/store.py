"""The study folder on disk: run folders, locks, failures, the plan and results.

Layout (DESIGN.md "run store")::

    <study>/study.json                the study spec and its planned runs (metadata)
    <study>/runs/<run_id>/            one run folder each (transferlens.train.run_dir names
                                      its files, run.json and error.json included)
    <study>/locks/<run_id>.lock       held by the process training the run
    <study>/results/                  everything the report reads (transferlens.results)
    <study>/analyses.json             where the analyses stand (complete / failed / skipped)

A run's state is read from these files alone: ``complete`` (complete.json),
``failed`` (error.json), ``running`` (its lock is held), else ``pending``. P-T specs
name their source run by id (``init.run``), which the executors resolve against
``<study>/runs`` (:meth:`StudyStore.runnable_spec`): the study folder can be moved as
a whole.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from transferlens.io import atomic_write_json, atomic_write_text
from transferlens.results import RESULTS_DIR, STUDY_JSON
from transferlens.study.locks import RunLock, is_locked
from transferlens.study.plan import Dependency, Plan, PlannedRun, RunMeta
from transferlens.train import run_dir as run_folder
from transferlens.train.checkpoints import checkpoint_path, resume_epoch
from transferlens.train.spec import TrainSpec

RunState = Literal["complete", "failed", "running", "pending"]
STATES: tuple[RunState, ...] = ("complete", "running", "pending", "failed")
STUDY_FILE = STUDY_JSON
ANALYSES_FILE = "analyses.json"


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace collapsed to single spaces, cut at ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_line(error: BaseException) -> str:
    """``Type: message`` on one line."""
    return one_line(f"{type(error).__name__}: {error}")


class StudyStore:
    """Paths and states of one study folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def results_dir(self) -> Path:
        return self.root / RESULTS_DIR

    @property
    def study_file(self) -> Path:
        return self.root / STUDY_FILE

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def runnable_spec(self, spec: TrainSpec) -> TrainSpec:
        """A planned spec whose source (``init.run``, a run id) is found in ``runs/``."""
        return spec.with_runs_dir(self.runs_dir)

    def lock(self, run_id: str) -> RunLock:
        return RunLock(self.locks_dir / f"{run_id}.lock")

    # ---------------------------------------------------------------- run states

    def is_complete(self, run_id: str) -> bool:
        return run_folder.is_complete(self.run_dir(run_id))

    def failure(self, run_id: str) -> dict[str, Any] | None:
        """The content of error.json (``error``: one line), or None."""
        path = self.run_dir(run_id) / run_folder.ERROR_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            return {"error": f"unreadable {path.name}"}

    def is_running(self, run_id: str) -> bool:
        return is_locked(self.locks_dir / f"{run_id}.lock")

    def state(self, run_id: str) -> RunState:
        if self.is_complete(run_id):
            return "complete"
        if self.is_running(run_id):
            return "running"
        if self.failure(run_id) is not None:
            return "failed"
        return "pending"

    def last_epoch(self, run_id: str) -> int | None:
        """The last epoch with a metrics record (None before epoch 0 is evaluated)."""
        records = run_folder.read_metrics(self.run_dir(run_id))
        return int(records[-1]["epoch"]) if records else None

    def summary(self, run_id: str) -> dict[str, Any] | None:
        return run_folder.read_complete(self.run_dir(run_id))

    def checkpoint_lost(self, dependency: Dependency) -> bool:
        """Whether the source run is complete without checkpoint ``epoch``: it will never
        come (pruned by an earlier plan that did not need it, or deleted)."""
        folder = self.run_dir(dependency.run_id)
        return (
            run_folder.is_complete(folder)
            and not checkpoint_path(folder, dependency.epoch).is_file()
        )

    def checkpoint_ready(self, dependency: Dependency) -> bool:
        """Whether checkpoint ``epoch`` of the source run is final (never rewritten).

        A checkpoint is final once the run is complete or its resume state has passed
        that epoch: a resumed run restarts after its resume state, so later epochs may
        be rewritten but this one never is.
        """
        folder = self.run_dir(dependency.run_id)
        if run_folder.is_complete(folder):
            return True
        if not checkpoint_path(folder, dependency.epoch).is_file():
            return False
        resumed = resume_epoch(folder)  # None while being replaced: asked again next poll
        return resumed is not None and resumed >= dependency.epoch

    # ---------------------------------------------------------------- writing

    def record_failure(
        self, run_id: str, error: BaseException | str, trace: str | None = None
    ) -> str:
        """Write error.json (one line) and traceback.txt; returns the line."""
        line = error_line(error) if isinstance(error, BaseException) else one_line(error)
        if trace is None and isinstance(error, BaseException):
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        folder = self.run_dir(run_id)
        atomic_write_text(folder / run_folder.TRACEBACK_FILE, trace or line + "\n")
        atomic_write_json(
            folder / run_folder.ERROR_FILE,
            {
                "run_id": run_id,
                "error": line,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "last_epoch": self.last_epoch(run_id),
            },
        )
        return line

    def clear_failure(self, run_id: str) -> None:
        (self.run_dir(run_id) / run_folder.ERROR_FILE).unlink(missing_ok=True)

    def write_run_json(self, run: PlannedRun) -> None:
        """run.json: the run's meta, dependency and planned spec (``init.run`` = a run id)."""
        atomic_write_json(self.run_dir(run.run_id) / run_folder.RUN_FILE, run_record(run))

    def write_study(self, plan: Plan, source_file: str | None = None) -> None:
        """study.json: the validated study spec and every planned run's record."""
        atomic_write_json(
            self.study_file,
            {
                "name": plan.study.name,
                "source_file": source_file,
                "study": plan.study.model_dump(mode="json"),
                "runs": [
                    {key: value for key, value in run_record(run).items() if key != "spec"}
                    for run in plan
                ],
            },
        )

    def read_study(self) -> dict[str, Any]:
        from transferlens.errors import UserInputError

        if not self.study_file.is_file():
            raise UserInputError(f"{self.root}: not a study folder (no {STUDY_FILE})")
        try:
            return json.loads(self.study_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise UserInputError(f"{self.study_file}: not valid JSON") from None

    def planned_runs(self) -> list[tuple[str, RunMeta, Dependency | None]]:
        """The runs study.json lists: (run id, meta, dependency)."""
        entries = []
        for entry in self.read_study()["runs"]:
            dependency = entry.get("depends_on")
            entries.append(
                (
                    entry["run_id"],
                    RunMeta.from_json(entry["meta"]),
                    Dependency(**dependency) if dependency else None,
                )
            )
        return entries

    def load_plan(self) -> Plan:
        """The plan re-built from study.json (for analyses and reports of a finished study)."""
        from transferlens.study.loading import parse_study
        from transferlens.study.plan import plan_study

        data = self.read_study()
        study = parse_study(data["study"], str(self.study_file), require_paths=False)
        return plan_study(study, str(self.study_file))

    def write_analyses_state(self, state: str, detail: str = "") -> None:
        atomic_write_json(
            self.root / ANALYSES_FILE,
            {
                "state": state,
                "detail": one_line(detail),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )

    def analyses_state(self) -> dict[str, Any] | None:
        path = self.root / ANALYSES_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_record(run: PlannedRun) -> dict[str, Any]:
    """The JSON of a planned run: id, meta, dependency, how it executes (``threads``,
    ``keep_epochs``: null = every checkpoint) and spec."""
    return {
        "run_id": run.run_id,
        "meta": run.meta.to_json(),
        "depends_on": run.depends_on.__dict__ if run.depends_on else None,
        "threads": run.threads,
        "keep_epochs": None if run.keep_epochs is None else list(run.keep_epochs),
        "spec": run.spec.model_dump(mode="json"),
    }
