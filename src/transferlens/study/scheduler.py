"""Which runs can start now, which wait, and when a study is done (shared by executors).

Each poll classifies every run not in flight in this process from the files of the
study folder alone, so several runners (local pools, SLURM) can work on one study:

* ``complete``; ``failed`` (final unless ``retry_failed`` and not yet retried here);
* ``elsewhere``: another process holds its lock (we wait for it);
* ``waiting``: its source checkpoint is not final yet and the source may still
  produce it; ``blocked``: the source failed before producing it (reported, skipped);
* ``ready``: can start now. Sources come first (everything else waits on them).

The study is finished when nothing is in flight, ready, waiting or elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from transferlens.study.plan import Plan, PlannedRun
from transferlens.study.store import StudyStore

Verdict = Literal["complete", "failed", "elsewhere", "waiting", "blocked", "ready"]


@dataclass
class Scheduler:
    """Poll-based view of a study's progress (see the module docstring)."""

    plan: Plan
    store: StudyStore
    retry_failed: bool = False
    in_flight: set[str] = field(default_factory=set)
    attempted: set[str] = field(default_factory=set)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    on_finish: Callable[[str], None] | None = None  # e.g. regenerate runs.csv

    def poll(self) -> dict[str, Verdict]:
        """Classify every run not in flight here (dependencies first: plan order)."""
        verdicts: dict[str, Verdict] = {}
        for run in self.plan:
            if run.run_id in self.in_flight:
                continue
            verdicts[run.run_id] = self._classify(run, verdicts)
        self.verdicts = verdicts
        return verdicts

    def _classify(self, run: PlannedRun, known: dict[str, Verdict]) -> Verdict:
        store, run_id = self.store, run.run_id
        if store.is_complete(run_id):
            return "complete"
        if store.is_running(run_id):
            return "elsewhere"
        if store.failure(run_id) is not None and (
            not self.retry_failed or run_id in self.attempted
        ):
            return "failed"
        dependency = run.depends_on
        if dependency is not None and not store.checkpoint_ready(dependency):
            source = known.get(dependency.run_id)
            if source in ("failed", "blocked", "complete"):
                # A complete source lacking the checkpoint can never produce it either.
                return "blocked"
            return "waiting"
        return "ready"

    def ready(self) -> list[PlannedRun]:
        """Runs that can start now: sources first, then in plan order."""
        ready = [self.plan[run_id] for run_id, v in self.verdicts.items() if v == "ready"]
        return sorted(ready, key=lambda run: run.meta.kind != "source")

    def start(self, run_id: str) -> None:
        self.in_flight.add(run_id)
        self.attempted.add(run_id)
        self.verdicts.pop(run_id, None)

    def finish(self, run_id: str) -> None:
        self.in_flight.discard(run_id)
        if self.on_finish is not None:
            self.on_finish(run_id)

    def finished(self) -> bool:
        busy = ("ready", "waiting", "elsewhere")
        return not self.in_flight and not any(v in busy for v in self.verdicts.values())

    def count(self, *verdicts: Verdict) -> int:
        return sum(1 for v in self.verdicts.values() if v in verdicts)

    def runs_with(self, verdict: Verdict) -> list[str]:
        return [run_id for run_id, v in self.verdicts.items() if v == verdict]


def blocked_reason(plan: Plan, run_id: str) -> str:
    """Why a run is blocked: its source run failed (or lacks the checkpoint)."""
    dependency = plan[run_id].depends_on
    assert dependency is not None
    return f"source run {dependency.run_id} has no final checkpoint of epoch {dependency.epoch}"


def order_ids(plan: Plan, run_ids: Iterable[str]) -> list[str]:
    """``run_ids`` in plan order."""
    wanted = set(run_ids)
    return [run.run_id for run in plan if run.run_id in wanted]
