"""Which torch device a user's ``device`` setting names: the one resolution every layer uses.

Accepted settings: ``auto`` (this process's GPU when CUDA is available, else the
CPU), ``cpu``, ``cuda`` (GPU number ``local_rank`` modulo the visible GPUs, so each
process of a torchrun job takes its own), ``cuda:N`` and ``mps``. A device that is
asked for but absent is bad input (exit 2), never a silent fall back to the CPU.
"""

from __future__ import annotations

import torch

from transferlens.errors import UserInputError


def resolve_device(
    requested: str | torch.device = "auto", *, local_rank: int = 0, key: str = "device"
) -> torch.device:
    """The device ``requested`` names, checked to exist (``key`` names it in errors)."""
    text = str(requested)
    cuda = torch.cuda.is_available()
    if text == "auto":
        text = "cuda" if cuda else "cpu"
    if text.startswith("cuda"):
        if not cuda:
            raise UserInputError(f"{key}: {text!r} requested but CUDA is not available")
        count = torch.cuda.device_count()
        if text == "cuda":
            text = f"cuda:{local_rank % count}"
        index = text.partition(":")[2]
        if not index.isdigit():
            raise UserInputError(f"{key}: unknown device {text!r}")
        if int(index) >= count:
            raise UserInputError(f"{key}: {text!r} but only {count} GPU(s) are visible")
    if text == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"{key}: 'mps' requested but it is not available")
    try:
        return torch.device(text)
    except RuntimeError:
        raise UserInputError(f"{key}: unknown device {text!r}") from None
