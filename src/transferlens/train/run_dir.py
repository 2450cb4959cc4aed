"""A run folder, read back: its spec, metrics, checkpoints and completion summary.

Layout (docs/architecture.md, "run folders")::

    <run>/spec.json                            the TrainSpec, defaults filled in
    <run>/metrics.jsonl                        one record per epoch 0..E
    <run>/checkpoints/epoch_{k:04d}.safetensors model state dict after k epochs
    <run>/resume.safetensors                   optimiser + RNG state of the last saved epoch
    <run>/environment.json                     threads, device, torch version of its epochs
    <run>/bootstrap/{test,train_eval}_{k:04d}.npy  the metric of epoch k on each bootstrap
                                               resample of the examples (train/intervals.py)
    <run>/bootstrap/train_eval_sums_{k:04d}.npy    accuracy-like metrics: each train-eval
                                               example's term summed over epochs 1..k
    <run>/complete.json                        written last: the run summary

A study that prunes checkpoints (``keep_checkpoints: needed``) leaves only the epochs
its plan named in ``run.json`` (``keep_epochs``) and no resume state once complete.

and the files a study keeps beside them (written by :mod:`transferlens.study`)::

    <run>/run.json                             what the run is in its study
    <run>/error.json, traceback.txt            why the run failed (error.json: one line)
    <run>/torchrun.log                         the output of a multi-process run

This module names every file of a run folder; other layers call it instead of
spelling the names.
``"final"`` means the last epoch of a complete run; ``"best"`` the saved epoch with
the highest test metric (the earliest one on ties).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from transferlens.errors import UserInputError
from transferlens.io import read_jsonl
from transferlens.train.checkpoints import checkpoint_path, read_checkpoint, saved_epochs
from transferlens.train.environment import ENVIRONMENT_FILE as ENVIRONMENT_FILE
from transferlens.train.environment import Environment, read_segments

SPEC_FILE = "spec.json"
METRICS_FILE = "metrics.jsonl"
COMPLETE_FILE = "complete.json"
RUN_FILE = "run.json"
ERROR_FILE = "error.json"
TRACEBACK_FILE = "traceback.txt"
TORCHRUN_LOG = "torchrun.log"
BOOTSTRAP_DIR = "bootstrap"

EpochRef = int | Literal["final", "best"]


def read_spec_json(run_dir: Path, where: str = "run") -> dict[str, Any]:
    """The raw spec.json of a run folder (UserInputError naming ``where`` if missing)."""
    path = Path(run_dir) / SPEC_FILE
    if not path.is_file():
        raise UserInputError(f"{where}: {run_dir} is not a run folder (no {SPEC_FILE})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserInputError(f"{path}: not valid JSON") from None


def read_complete(run_dir: Path) -> dict[str, Any] | None:
    """The summary in complete.json, or None while the run is not complete."""
    path = Path(run_dir) / COMPLETE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def is_complete(run_dir: str | os.PathLike) -> bool:
    """Whether the run folder holds its completion marker (written last)."""
    return (Path(run_dir) / COMPLETE_FILE).is_file()


def replicates_path(run_dir: str | os.PathLike, split: str, epoch: int) -> Path:
    """``<run>/bootstrap/<split>_<epoch:04d>.npy``: epoch ``epoch``'s metric on ``split``
    (``test`` or ``train_eval``) for each bootstrap resample of its examples."""
    return Path(run_dir) / BOOTSTRAP_DIR / f"{split}_{int(epoch):04d}.npy"


def example_sums_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``<run>/bootstrap/train_eval_sums_<epoch:04d>.npy``: each train-eval example's
    metric term summed over epochs 1..``epoch`` (the speed interval of a metric that is
    a mean over examples, :mod:`transferlens.train.intervals`)."""
    return Path(run_dir) / BOOTSTRAP_DIR / f"train_eval_sums_{int(epoch):04d}.npy"


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of metrics.jsonl (a torn last line ignored; [] if none)."""
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def run_environments(run_dir: str | os.PathLike) -> list[Environment]:
    """The distinct environments the run's epochs were trained in, in order ([] when it
    recorded none: trained before environments were recorded)."""
    found: list[Environment] = []
    for _, environment in read_segments(run_dir):
        if environment not in found:
            found.append(environment)
    return found


def spec_sha256(run_dir: str | os.PathLike) -> str | None:
    """SHA-256 (hex) of the run's spec.json as stored, or None when it has none."""
    path = Path(run_dir) / SPEC_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def best_epoch(metrics: list[dict[str, Any]], among: list[int] | None = None) -> int | None:
    """Epoch with the highest test metric (earliest on ties), optionally among ``among``."""
    allowed = set(among) if among is not None else None
    best: tuple[float, int] | None = None
    for record in metrics:
        epoch, value = int(record["epoch"]), record.get("test_metric")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if allowed is not None and epoch not in allowed:
            continue
        if best is None or value > best[0]:
            best = (value, epoch)
    return None if best is None else best[1]


@dataclass(frozen=True)
class RunRecord:
    """A run folder read back (see the module docstring)."""

    path: Path
    spec: dict[str, Any]
    metrics: list[dict[str, Any]]
    complete: bool
    summary: dict[str, Any] | None
    checkpoints: dict[int, Path] = field(default_factory=dict)

    def train_spec(self):
        """The spec as a validated :class:`~transferlens.train.spec.TrainSpec`.

        (Validation needs the spec's data set and model to be registered.)
        """
        from transferlens.train.spec import TrainSpec
        from transferlens.validation import validate

        return validate(TrainSpec, self.spec, str(self.path / SPEC_FILE))


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run folder: spec, metrics records (torn last line ignored), summary, checkpoints.

    ``spec`` is the raw JSON mapping (``RunRecord.train_spec()`` validates it).
    """
    path = Path(run_dir)
    spec = read_spec_json(path, where=str(path))
    summary = read_complete(path)
    return RunRecord(
        path=path,
        spec=spec,
        metrics=read_metrics(path),
        complete=summary is not None,
        summary=summary,
        checkpoints={epoch: checkpoint_path(path, epoch) for epoch in saved_epochs(path)},
    )


def available_epochs(run_dir: str | os.PathLike) -> list[int]:
    """Epochs of the run folder that have a checkpoint, ascending."""
    return saved_epochs(run_dir)


def resolve_epoch(run_dir: str | os.PathLike, epoch: EpochRef, where: str = "epoch") -> int:
    """An epoch number from an int, ``"final"`` or ``"best"``; UserInputError if not saved."""
    path = Path(run_dir)
    epochs = saved_epochs(path)
    if epoch in ("final", "best"):
        summary = read_complete(path)
        if summary is None:
            raise UserInputError(f"{where}: {epoch!r} needs a complete run; {path} is not complete")
        if epoch == "final":
            return int(summary["epochs"])
        chosen = best_epoch(read_metrics(path), among=epochs)
        if chosen is None:
            raise UserInputError(f"{where}: {path} has no saved epoch with a test metric")
        return chosen
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise UserInputError(
            f"{where}: expected an epoch number, 'final' or 'best' (got {epoch!r})"
        )
    if epoch not in epochs:
        shown = ", ".join(str(e) for e in epochs) or "none"
        raise UserInputError(f"{where}: {path} has no checkpoint of epoch {epoch} (saved: {shown})")
    return epoch


def load_state_dict(
    run_dir: str | os.PathLike, epoch: EpochRef = "final", where: str = "epoch"
) -> dict[str, torch.Tensor]:
    """The model state dict of a run's checkpoint (CPU tensors)."""
    number = resolve_epoch(run_dir, epoch, where=where)
    state, _ = read_checkpoint(checkpoint_path(run_dir, number))
    return state


def load_model(run_dir: str | os.PathLike, epoch: EpochRef = "final") -> nn.Module:
    """The model of a run at ``epoch`` (int, ``"final"`` or ``"best"``), on the CPU, eval mode.

    Built with ``models.build_model`` from the name, class count and keyword arguments
    stored with the checkpoint, so the data set is not needed.
    """
    from transferlens import models

    number = resolve_epoch(run_dir, epoch)
    state, metadata = read_checkpoint(checkpoint_path(run_dir, number))
    kwargs = json.loads(metadata.get("model_kwargs", "{}"))
    with torch.random.fork_rng(devices=[]):  # building draws random weights: keep ours
        model = models.build_model(metadata["model"], int(metadata["num_classes"]), **kwargs)
    model.load_state_dict(state)
    return model.eval()
