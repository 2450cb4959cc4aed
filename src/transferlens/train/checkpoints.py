"""Per-epoch model checkpoints and the resume state, as safetensors (never pickled).

* ``checkpoints/epoch_{k:04d}.safetensors``: the model's ``state_dict`` after k epochs
  (k = 0 is the initialisation), with metadata ``epoch``, ``model``, ``num_classes``
  and ``model_kwargs`` so that the model can be rebuilt without the data.
* ``resume.safetensors``: what continuing after epoch k needs beyond the weights of
  checkpoint k: the optimiser state (momentum buffers; group settings in metadata) and
  the global RNG states. The learning rate, data order, augmentation and mixup draws
  are pure functions of (seed, epoch) and need no saved state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from transferlens.errors import UserInputError
from transferlens.io import atomic_save_safetensors
from transferlens.train.seeds import capture_rng_states, restore_rng_states

CHECKPOINT_DIR = "checkpoints"
RESUME_FILE = "resume.safetensors"
RESUME_FORMAT = "1"
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def checkpoint_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    """``<run>/checkpoints/epoch_{epoch:04d}.safetensors`` (whether or not it exists)."""
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{int(epoch):04d}.safetensors"


def saved_epochs(run_dir: str | os.PathLike) -> list[int]:
    """Epochs with a checkpoint file in the run folder, ascending."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    epochs = []
    for file in folder.glob("epoch_*.safetensors"):
        number = file.stem.removeprefix("epoch_")
        if number.isdigit():
            epochs.append(int(number))
    return sorted(epochs)


def prune_checkpoints(run_dir: str | os.PathLike, keep: Collection[int]) -> list[int]:
    """Delete every checkpoint whose epoch is not in ``keep``; returns the deleted epochs.

    The caller keeps the epoch its resume state names (the latest saved), so that the
    run can always continue: a crash between writing a checkpoint and pruning leaves
    only extra files, which the next pruning deletes.
    """
    wanted = {int(epoch) for epoch in keep}
    deleted = [epoch for epoch in saved_epochs(run_dir) if epoch not in wanted]
    for epoch in deleted:
        checkpoint_path(run_dir, epoch).unlink(missing_ok=True)
    return deleted


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel/DataParallel (state-dict keys without "module.")."""
    return getattr(model, "module", model)


def save_checkpoint(
    model: nn.Module,
    path: Path,
    *,
    epoch: int,
    model_name: str,
    num_classes: int,
    model_kwargs: Mapping[str, Any],
) -> None:
    """Write the model's state dict (on CPU, contiguous) atomically with rebuild metadata."""
    metadata = {
        "epoch": str(epoch),
        "model": model_name,
        "num_classes": str(num_classes),
        "model_kwargs": json.dumps(dict(model_kwargs), sort_keys=True),
    }
    atomic_save_safetensors(unwrap(model).state_dict(), path, metadata=metadata)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict and metadata of a checkpoint file (UserInputError if missing or unreadable)."""
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path), device="cpu"), metadata
    except Exception as error:  # corrupt or foreign file: say which one
        reason = " ".join(str(error).split())[:200]
        raise UserInputError(f"{path}: cannot read checkpoint ({reason})") from None


@dataclass(frozen=True)
class ResumeState:
    """What :func:`read_resume_state` found: the epoch it belongs to and its contents."""

    epoch: int
    optimizer_state: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor]
    rng_extras: dict[str, Any]

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the optimiser state and restore the global RNG states.

        Implementation switches (fused, foreach, ...) stay those of ``optimizer``: they
        depend on where this process runs, not on where the state was saved.
        """
        switches = [
            {key: group[key] for key in IMPLEMENTATION_KEYS if key in group}
            for group in optimizer.param_groups
        ]
        optimizer.load_state_dict(self.optimizer_state)
        for group, kept in zip(optimizer.param_groups, switches):
            group.update(kept)
        restore_rng_states(self.rng_tensors, self.rng_extras)


def save_resume_state(run_dir: Path, epoch: int, optimizer: torch.optim.Optimizer) -> None:
    """Write ``resume.safetensors`` for continuing after ``epoch`` (atomically)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                plain_state.setdefault(str(index), {})[key] = value
    rng_tensors, rng_extras = capture_rng_states()
    tensors.update(rng_tensors)
    metadata = {
        "format": RESUME_FORMAT,
        "epoch": str(epoch),
        "param_groups": json.dumps(state["param_groups"]),
        "optimizer_plain_state": json.dumps(plain_state),
        "rng_extras": json.dumps(rng_extras),
    }
    atomic_save_safetensors(tensors, run_dir / RESUME_FILE, metadata=metadata)


def resume_epoch(run_dir: str | os.PathLike) -> int | None:
    """The epoch the resume state belongs to (from its metadata alone), or None.

    None also while the file is missing or being replaced: callers that poll ask again.
    """
    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            return int((handle.metadata() or {})["epoch"])
    except Exception:  # torn or replaced under us: no answer this time
        return None


def read_resume_state(run_dir: Path) -> ResumeState | None:
    """The resume state of a run folder, or None when there is none."""
    path = run_dir / RESUME_FILE
    if not path.is_file():
        return None
    tensors, metadata = read_checkpoint(path)
    if metadata.get("format") != RESUME_FORMAT:
        raise UserInputError(f"{path}: unknown resume format {metadata.get('format')!r}")
    optimizer_entries: dict[int, dict[str, Any]] = {}
    for index, entries in json.loads(metadata["optimizer_plain_state"]).items():
        optimizer_entries[int(index)] = dict(entries)
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            optimizer_entries.setdefault(int(index), {})[key] = value
    optimizer_state = {
        "state": optimizer_entries,
        "param_groups": json.loads(metadata["param_groups"]),
    }
    rng_tensors = {name: value for name, value in tensors.items() if name.startswith("rng.")}
    return ResumeState(
        epoch=int(metadata["epoch"]),
        optimizer_state=optimizer_state,
        rng_tensors=rng_tensors,
        rng_extras=json.loads(metadata["rng_extras"]),
    )
