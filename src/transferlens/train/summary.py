"""The summary of a finished run (``complete.json``), computed from its metrics records.

* ``final_*``: the record of the last epoch E.
* ``best_test_metric`` / ``best_epoch``: highest test metric over epochs 0..E (earliest
  on ties); ``best_saved_epoch``: the same among epochs with a checkpoint.
* ``optimization_speed``: the paper's "mean training accuracy (evaluation mode) over
  all epochs", taken over the trained epochs 1..E. Epoch 0 (the initialisation, at
  chance level for P-T and RI-T alike since both heads are fresh) is left out: it
  measures no optimisation and would only add the same constant to every run.
  None when the run did not evaluate its training split (``train_eval: false``).
* ``train_seconds`` (sum of the epochs' training time, across resumptions),
  ``eval_seconds``, ``images_per_second`` = images trained / train_seconds.
* ``final_test_metric_low/high``, ``optimization_speed_low/high``: 95% bootstrap
  intervals over the test examples and over the train-eval subset
  (:mod:`transferlens.train.intervals`, which also says why ``best_test_metric`` has
  none); None when the run kept no replicates (trained before they existed) or has no
  speed. A complete.json written before these fields reads back with None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from transferlens.train.run_dir import best_epoch


@dataclass(frozen=True)
class RunSummary:
    """What a finished run reports (also the content of ``complete.json``)."""

    run_dir: str
    epochs: int
    final_test_loss: float
    final_test_metric: float
    final_train_metric: float | None
    best_test_metric: float
    best_epoch: int
    best_saved_epoch: int | None
    optimization_speed: float | None
    train_seconds: float
    eval_seconds: float
    images_per_second: float
    task: str
    num_classes: int
    device: str
    amp: bool
    world_size: int
    resumed_from: int | None = None
    final_test_metric_low: float | None = None
    final_test_metric_high: float | None = None
    optimization_speed_low: float | None = None
    optimization_speed_high: float | None = None
    already_complete: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("already_complete")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], already_complete: bool = True) -> RunSummary:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["already_complete"] = already_complete
        return cls(**values)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite and len(finite) == len(values) else None


def summarise(
    run_dir: Path,
    metrics: list[dict[str, Any]],
    saved: list[int],
    *,
    task: str,
    num_classes: int,
    device: str,
    amp: bool,
    world_size: int,
    resumed_from: int | None,
    intervals: Mapping[str, float | None] | None = None,
) -> RunSummary:
    """Build the summary from the records of epochs 0..E (see the module docstring);
    ``intervals``: :func:`transferlens.train.intervals.run_intervals` (None: no intervals)."""
    final = metrics[-1]
    by_epoch = {int(record["epoch"]): record for record in metrics}
    best = best_epoch(metrics)
    trained = [record for record in metrics if record["epoch"] >= 1]
    train_seconds = sum(record["seconds"] for record in trained)
    images = sum(record["images"] for record in trained)
    speed = _mean([record.get("train_metric") for record in trained])
    bounds = dict(intervals or {})
    if speed is None:  # no speed, no interval for it
        bounds.pop("optimization_speed_low", None)
        bounds.pop("optimization_speed_high", None)
    return RunSummary(
        run_dir=str(run_dir),
        epochs=int(final["epoch"]),
        final_test_loss=final["test_loss"],
        final_test_metric=final["test_metric"],
        final_train_metric=final.get("train_metric"),
        best_test_metric=by_epoch[best]["test_metric"] if best is not None else math.nan,
        best_epoch=best if best is not None else int(final["epoch"]),
        best_saved_epoch=best_epoch(metrics, among=saved),
        optimization_speed=speed,
        train_seconds=train_seconds,
        eval_seconds=sum(record["eval_seconds"] for record in metrics),
        images_per_second=images / train_seconds if train_seconds > 0 else math.nan,
        task=task,
        num_classes=num_classes,
        device=device,
        amp=amp,
        world_size=world_size,
        resumed_from=resumed_from,
        final_test_metric_low=bounds.get("final_test_metric_low"),
        final_test_metric_high=bounds.get("final_test_metric_high"),
        optimization_speed_low=bounds.get("optimization_speed_low"),
        optimization_speed_high=bounds.get("optimization_speed_high"),
    )
