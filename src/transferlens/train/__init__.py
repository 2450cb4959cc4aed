"""Training runs: the spec, the paper's loop, and run folders read back.

``train(spec, run_dir)`` writes a resumable run folder (spec.json, metrics.jsonl,
per-epoch safetensors checkpoints, resume state, complete.json); ``load_run``,
``load_model``, ``checkpoint_path`` and ``available_epochs`` read one back.
"""

from transferlens.train.checkpoints import checkpoint_path
from transferlens.train.loaders import build_loaders
from transferlens.train.loop import TrainingDiverged, train
from transferlens.train.run_dir import (
    RunRecord,
    available_epochs,
    load_model,
    load_run,
    load_state_dict,
    resolve_epoch,
)
from transferlens.train.spec import (
    FileInit,
    InitSpec,
    PretrainedInit,
    RandomInit,
    RunInit,
    TrainSpec,
)
from transferlens.train.summary import RunSummary

__all__ = [
    "FileInit",
    "InitSpec",
    "PretrainedInit",
    "RandomInit",
    "RunInit",
    "RunRecord",
    "RunSummary",
    "TrainSpec",
    "TrainingDiverged",
    "available_epochs",
    "build_loaders",
    "checkpoint_path",
    "load_model",
    "load_run",
    "load_state_dict",
    "resolve_epoch",
    "train",
]
