"""How long a study's training has left, from the epoch times measured while it runs.

An epoch's time is the wall time between two consecutive epoch reports of one run
(training, evaluation and checkpoint; epoch 0, which only evaluates, is not counted).
The estimate assumes:

- every epoch still to come costs the mean of the epochs measured so far of runs of the
  same kind and target (same data, same size), else of the same kind (a source epoch
  and a target epoch may differ tenfold, so one never stands for the other);
- a run's epochs left are its epochs minus the last one reported (all of them before
  its first report, even if it will resume part-way);
- the runs not started yet are the left-over count times the mean time of the planned
  runs not started in this session whose kind has been measured (exact unless some
  were complete before the session);
- the workers stay busy side by side: the study's time left is the total work left
  divided by the workers, but never less than one run's time left (the longest running
  one, or the mean waiting one).

A run has no estimate before an epoch of its kind is measured, the study none while a
running run has none. Waits on dependencies (P-T runs waiting for P) and contention
changes are not modelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from transferlens.study.plan import Plan

CostKey = tuple[str, str]  # (kind, target): runs whose epochs cost alike


@dataclass
class _Running:
    epoch: int | None = None  # the last epoch reported
    reported_at: float = 0.0


class StudyEta:
    """Estimates of the time left per run and for the study (see the module docstring)."""

    def __init__(
        self, plan: Plan, workers: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.plan = plan
        self.workers = max(1, workers)
        self.clock = clock
        self.running: dict[str, _Running] = {}
        self.seen: set[str] = set()  # runs started in this session
        # (sum of seconds, count) of the measured epochs, per cost key and per kind: the
        # means are read at every epoch report, so they are kept, not recomputed.
        self._by_key: dict[CostKey, tuple[float, int]] = {}
        self._by_kind: dict[str, tuple[float, int]] = {}

    def _key(self, run_id: str) -> CostKey:
        meta = self.plan[run_id].meta
        return meta.kind, meta.target

    def started(self, run_id: str) -> None:
        self.running[run_id] = _Running()
        self.seen.add(run_id)

    def epoch(self, run_id: str, epoch: int) -> None:
        """Run ``run_id`` reported ``epoch``: measures the epoch if the previous one was seen."""
        state = self.running.setdefault(run_id, _Running())
        now = self.clock()
        if state.epoch is not None and epoch == state.epoch + 1:
            key, seconds = self._key(run_id), now - state.reported_at
            for totals, group in ((self._by_key, key), (self._by_kind, key[0])):
                total, count = totals.get(group, (0.0, 0))
                totals[group] = (total + seconds, count + 1)
        state.epoch, state.reported_at = epoch, now

    def finished(self, run_id: str) -> None:
        self.running.pop(run_id, None)

    def seconds_per_epoch(self, run_id: str) -> float | None:
        """Mean measured epoch of runs of the same kind and target, else of the same kind."""
        key = self._key(run_id)
        total, count = self._by_key.get(key) or self._by_kind.get(key[0]) or (0.0, 0)
        return total / count if count else None

    def run_seconds_left(self, run_id: str) -> float | None:
        """Time left of a run (started or not); None before any epoch is measured."""
        per_epoch = self.seconds_per_epoch(run_id)
        if per_epoch is None:
            return None
        state = self.running.get(run_id)
        done = state.epoch if state is not None and state.epoch is not None else 0
        return max(0, self.plan[run_id].epochs - done) * per_epoch

    def study_seconds_left(self, left: int) -> float | None:
        """Time left until ``left`` runs (running ones included) are done; None if unknown."""
        running = [self.run_seconds_left(run_id) for run_id in self.running]
        if left <= 0:
            return 0.0
        if any(seconds is None for seconds in running):
            return None
        work = [seconds for seconds in running if seconds is not None]
        longest = max(work, default=0.0)  # no run is shared between workers
        waiting = left - len(running)
        candidates = [run.run_id for run in self.plan if run.run_id not in self.seen]
        if waiting > 0 and candidates:
            estimates = [self.run_seconds_left(run_id) for run_id in candidates]
            known = [seconds for seconds in estimates if seconds is not None]
            if not known:
                return None
            mean_run = sum(known) / len(known)
            work.append(waiting * mean_run)
            longest = max(longest, mean_run)
        if not work:
            return None
        return max(sum(work) / self.workers, longest)
