"""Reading weight files safely and loading a backbone (how P-T is made from P).

Nothing is ever unpickled: ``.safetensors`` files are read with safetensors,
PyTorch files (``.pt``, ``.pth``, ``.bin``, ``.tar`` as in ``ckpt.pth.tar``)
with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from transferlens.errors import UserInputError
from transferlens.models.helpers import head_prefix

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".tar")
WRAPPER_KEYS = ("state_dict", "model")
# DataParallel/DistributedDataParallel, then torch.compile, prefix every key.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# The Fixup reference code keeps the stem and head scalars at the top level.
REFERENCE_FIXUP_RENAMES = {"bias1": "conv1.output_bias", "bias2": "fc.input_bias"}
SHOWN_KEYS = 5


def rename_reference_fixup_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Fixup reference checkpoint (top-level ``bias1``/``bias2``) onto our names.

    Other dicts are returned unchanged (as a new dict).
    """
    looks_like_reference = "bias1" in state_dict and "layer1.0.bias1a" in state_dict
    if not looks_like_reference:
        return dict(state_dict)
    return {REFERENCE_FIXUP_RENAMES.get(key, key): value for key, value in state_dict.items()}


def _read(path: Path) -> object:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if suffix in TORCH_SUFFIXES:
        return torch.load(path, weights_only=True, map_location="cpu")
    raise UserInputError(
        f"{path}: unsupported weights file type {suffix or '(none)'!r} "
        f"(expected .safetensors or one of {', '.join(TORCH_SUFFIXES)})"
    )


def load_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path`` (safetensors or a PyTorch file, never unpickled).

    A dict wrapped under ``"state_dict"`` or ``"model"`` is unwrapped, a
    ``"module."`` (DataParallel) or ``"_orig_mod."`` (torch.compile) prefix shared by
    every key is stripped and Fixup reference names
    are mapped (:func:`rename_reference_fixup_keys`). Raises UserInputError for a
    missing, unreadable or non-state-dict file.
    """
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"{file}: weights file not found")
    try:
        content = _read(file)
    except UserInputError:
        raise
    except Exception as error:  # safetensors/torch raise many types for corrupt files
        reason = " ".join(str(error).split())[:200]
        raise UserInputError(f"{file}: cannot read weights ({reason})") from None
    if isinstance(content, dict):
        for key in WRAPPER_KEYS:
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content:
        raise UserInputError(f"{file}: not a state dict (expected a name -> tensor mapping)")
    not_tensors = [key for key, value in content.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise UserInputError(f"{file}: entry {not_tensors[0]!r} is not a tensor")
    for prefix in WRAPPER_PREFIXES:
        if all(str(key).startswith(prefix) for key in content):
            content = {key[len(prefix) :]: value for key, value in content.items()}
    return rename_reference_fixup_keys(content)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _shown(keys: list[str]) -> str:
    more = f", ... (+{len(keys) - SHOWN_KEYS} more)" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


def load_backbone(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, strict_backbone: bool = True
) -> list[str]:
    """Load every entry of ``state_dict`` except the head's into ``model`` (in place).

    Keys under :func:`head_prefix` are skipped, so the model keeps its own
    (fresh) head: P-T = P's backbone + a new head. With ``strict_backbone`` any
    missing, unexpected or shape-mismatched backbone key raises UserInputError
    listing them and nothing is loaded; without it, only the entries that fit are
    loaded. Returns the skipped head keys of ``state_dict``, sorted.
    """
    head = head_prefix(model)
    own = {k: v for k, v in model.state_dict().items() if not _under(k, head)}
    skipped = sorted(key for key in state_dict if _under(key, head))
    given = {k: v for k, v in state_dict.items() if not _under(k, head)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    mismatched = sorted(
        f"{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(given)
        if given[k].shape != own[k].shape
    )
    if strict_backbone and (missing or unexpected or mismatched):
        problems = [
            f"{label} [{_shown(keys)}]"
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if keys
        ]
        raise UserInputError(
            f"weights do not fit the backbone of {type(model).__name__}: " + "; ".join(problems)
        )
    fitting = {k: v for k, v in given.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)
    return skipped
