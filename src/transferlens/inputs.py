"""What an analysis runs on, built from what a user names: models and evaluation data.

The ``transferlens analyze`` command and Python users share these functions, so that
both load models and data the same way:

* :func:`load_models` -- named models (evaluation mode, on the CPU) from run folders
  at given epochs, or from weights files of a registered model;
* :func:`run_data` -- the data spec and evaluation batch size a run was trained with;
* :func:`eval_data` -> :class:`EvalData` -- a built data set and the evaluation
  loaders over it (:func:`build_eval_loader`: never shuffled, never augmented);
* :func:`read_runs_table` -- a study's ``runs.csv`` for the table-level analyses.

Bad input raises :class:`~transferlens.errors.UserInputError` naming the parameter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from transferlens.data import DataSpec, DataSplits, build_data
from transferlens.errors import UserInputError
from transferlens.metrics import Task

Epoch = int | Literal["final", "best"]
Split = Literal["test", "train"]
DEFAULT_EVAL_BATCH_SIZE = 256


def load_weights_model(
    path: str | os.PathLike,
    model: str,
    num_classes: int,
    model_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Registry model ``model`` with ``num_classes`` outputs and the weights of ``path``.

    Building draws random weights; the global random state is left as it was.
    """
    from transferlens import models

    with torch.random.fork_rng(devices=[]):
        network = models.build_model(model, num_classes, **dict(model_kwargs or {}))
    state = models.load_weights_file(path)
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        reason = " ".join(str(error).split())[:300]
        raise UserInputError(f"{path}: does not fit model {model!r} ({reason})") from None
    return network.eval()


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with repeats made unique by a suffix: ``a, a, b`` -> ``a, a_2, b``."""
    unique: list[str] = []
    for name in names:
        candidate, index = name, 2
        while candidate in unique:
            candidate, index = f"{name}_{index}", index + 1
        unique.append(candidate)
    return unique


def load_models(
    runs: Sequence[str | os.PathLike] = (),
    *,
    epochs: Sequence[Epoch] = ("final",),
    weights: Sequence[str | os.PathLike] = (),
    model: str | None = None,
    num_classes: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, nn.Module]:
    """Named models in the given order: run folders (each at its epoch), then weights files.

    ``epochs`` holds one epoch for every run or one per run (an int, ``"final"`` or
    ``"best"``). Weights files need the registry ``model`` and ``num_classes`` (and its
    ``model_kwargs``). Models are named after their folder or file (repeats made
    unique, :func:`unique_names`) unless ``names`` gives one distinct name per model.
    """
    from transferlens.train import load_model

    if runs and weights:
        raise UserInputError("give models either as run folders or as weights files, not both")
    if len(epochs) not in (1, len(runs)):
        raise UserInputError(f"epochs: give one, or one per run ({len(runs)} runs)")
    if weights and (not model or num_classes is None):
        raise UserInputError("weights files need model NAME and num_classes K")
    loaded: list[tuple[str, nn.Module]] = []
    for index, run_dir in enumerate(runs):
        epoch = epochs[index] if len(epochs) > 1 else epochs[0]
        loaded.append((Path(run_dir).name, load_model(check_run_folder(run_dir), epoch)))
    for path in weights:
        network = load_weights_model(path, model, num_classes, model_kwargs)  # type: ignore[arg-type]
        loaded.append((Path(path).stem, network))
    if not loaded:
        raise UserInputError("no models: give run folders or weights files")
    if names:
        if len(names) != len(loaded):
            raise UserInputError(f"names: {len(names)} names for {len(loaded)} models")
        if len(set(names)) != len(names):
            raise UserInputError("names: names must differ")
    chosen = list(names) if names else unique_names([name for name, _ in loaded])
    return dict(zip(chosen, (network for _, network in loaded)))


def check_run_folder(run: str | os.PathLike, where: str = "runs") -> Path:
    """``run`` as a path, after checking that it is a run folder (``where`` names the
    parameter in the error): a folder that does not exist is not 'not complete'."""
    from transferlens.train.run_dir import read_spec_json

    path = Path(run)
    if not path.exists():
        raise UserInputError(f"{where}: run folder {path} does not exist")
    if not path.is_dir():
        raise UserInputError(f"{where}: {path} is a file, not a run folder")
    read_spec_json(path, where=where)  # a folder without the run's spec is not a run
    return path


def run_data(run: str | os.PathLike) -> tuple[DataSpec, int]:
    """The data spec a run folder was trained on, and its evaluation batch size."""
    from transferlens.train import load_run

    spec = load_run(check_run_folder(run)).train_spec()
    return spec.data, spec.eval_batch_size


def build_eval_loader(
    splits: DataSplits,
    split: Split = "test",
    *,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    num_workers: int = 0,
) -> DataLoader:
    """An unshuffled loader over the test split, or over the training images as evaluated
    during training (``train_eval``: without augmentation, when the data set has it)."""
    if batch_size < 1:
        raise UserInputError(f"batch_size: must be >= 1 (got {batch_size})")
    if split == "test":
        dataset = splits.test
    elif split == "train":
        dataset = splits.train_eval if splits.train_eval is not None else splits.train
    else:
        raise UserInputError(f"split: expected 'test' or 'train' (got {split!r})")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@dataclass(frozen=True)
class EvalData:
    """A built data set and how to batch it for evaluation."""

    splits: DataSplits
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE
    num_workers: int = 0

    @property
    def task(self) -> Task:
        return self.splits.task

    def loader(self, split: Split = "test") -> DataLoader:
        """An evaluation loader over ``split`` (:func:`build_eval_loader`)."""
        return build_eval_loader(
            self.splits, split, batch_size=self.batch_size, num_workers=self.num_workers
        )


def eval_data(
    data: DataSpec, *, batch_size: int = DEFAULT_EVAL_BATCH_SIZE, num_workers: int = 0
) -> EvalData:
    """Build the data set of ``data`` for evaluation in batches of ``batch_size``."""
    if batch_size < 1:
        raise UserInputError(f"batch_size: must be >= 1 (got {batch_size})")
    return EvalData(build_data(data), batch_size, num_workers)


def read_runs_table(path: str | os.PathLike) -> pd.DataFrame:
    """A ``runs.csv`` table (:mod:`transferlens.results`) read for feature reuse or the
    pre-training checkpoint table."""
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"{file}: file not found")
    try:
        return pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserInputError(f"{file}: not a readable CSV ({type(error).__name__})") from None
