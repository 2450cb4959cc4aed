"""Reading weight files safely and loading a backbone (how P-T is made from P).

Nothing is ever unpickled: ``.safetensors`` files are read with safetensors,
PyTorch files (``.pt``, ``.pth``, ``.th``, ``.bin``, ``.tar`` as in ``ckpt.pth.tar``)
with ``torch.load(weights_only=True)``, which only rebuilds tensors and plain
containers. :func:`check_weights_file` says, before any training, whether a file
fits a registry model's backbone (built on the meta device: nothing is allocated).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlens.errors import UserInputError
from transferlens.models.helpers import head_prefix

TORCH_SUFFIXES = (".pt", ".pth", ".th", ".bin", ".tar")
# Where training scripts keep the weights inside a checkpoint dict, most common first
# (``model_state_dict``: PyTorch's own tutorial; ``net``: several CIFAR repositories).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
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


@dataclass(frozen=True)
class BackboneFit:
    """How a state dict fits a model's backbone (the head is left out): each list sorted."""

    missing: list[str]
    unexpected: list[str]
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # key -> (given, model's)
    skipped: list[str]  # the state dict's head keys

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> list[str]:
        """One phrase per problem, missing keys first: ``missing key 'layer1.0.conv1.weight'``."""
        return (
            [f"missing key {key!r}" for key in self.missing]
            + [f"unexpected key {key!r}" for key in self.unexpected]
            + [
                f"key {key!r} has shape {given}, the model's {own}"
                for key, (given, own) in self.mismatched.items()
            ]
        )


def backbone_fit(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], head: str | None = None
) -> BackboneFit:
    """Compare the non-head keys and shapes of ``state_dict`` with ``model``'s (which
    may live on the meta device: only shapes are read). ``head``: the head's prefix
    (default :func:`~transferlens.models.helpers.head_prefix`)."""
    head = head if head is not None else head_prefix(model)
    own = {k: v for k, v in model.state_dict().items() if not _under(k, head)}
    given = {k: v for k, v in state_dict.items() if not _under(k, head)}
    return BackboneFit(
        missing=sorted(set(own) - set(given)),
        unexpected=sorted(set(given) - set(own)),
        mismatched={
            k: (tuple(given[k].shape), tuple(own[k].shape))
            for k in sorted(set(own) & set(given))
            if given[k].shape != own[k].shape
        },
        skipped=sorted(key for key in state_dict if _under(key, head)),
    )


def check_weights_file(
    path: str | os.PathLike,
    model: str,
    model_kwargs: Mapping[str, Any] | None = None,
    modules: Any = None,
) -> None:
    """Raise UserInputError unless ``path`` loads (:func:`load_weights_file`) and its
    backbone fits model ``model`` (any name :func:`build_model` takes): one line naming
    the file and the first key that does not fit. The head is left out: the classifier
    of the module map ``modules`` gives, else :func:`head_prefix`'s. The model is built
    on the meta device (no memory, no random numbers drawn); a model that cannot be
    built there is built on the CPU."""
    from transferlens.models.module_map import module_map
    from transferlens.models.registry import build_model

    state = load_weights_file(path)
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                network = build_model(model, 2, **dict(model_kwargs or {}))
        except (NotImplementedError, RuntimeError):
            network = build_model(model, 2, **dict(model_kwargs or {}))
    head = module_map(network, modules).classifier if modules is not None else None
    problems = backbone_fit(network, state, head).problems()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserInputError(f"{path}: does not fit model {model!r}: {problems[0]}{more}")


def load_backbone(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict_backbone: bool = True,
    head: str | None = None,
) -> list[str]:
    """Load every entry of ``state_dict`` except the head's into ``model`` (in place).

    Keys under ``head`` (default :func:`head_prefix`) are skipped, so the model keeps its own
    (fresh) head: P-T = P's backbone + a new head. With ``strict_backbone`` any
    missing, unexpected or shape-mismatched backbone key raises UserInputError
    listing them and nothing is loaded; without it, only the entries that fit are
    loaded. Returns the skipped head keys of ``state_dict``, sorted.
    """
    fit = backbone_fit(model, state_dict, head)
    if strict_backbone and not fit.fits:
        problems = [
            f"{label} [{_shown(keys)}]"
            for label, keys in (
                ("missing keys", fit.missing),
                ("unexpected keys", fit.unexpected),
                ("shape mismatches", [f"{k} {a} vs {b}" for k, (a, b) in fit.mismatched.items()]),
            )
            if keys
        ]
        raise UserInputError(
            f"weights do not fit the backbone of {type(model).__name__}: " + "; ".join(problems)
        )
    own, head = model.state_dict(), set(fit.skipped)
    fitting = {
        k: v
        for k, v in state_dict.items()
        if k not in head and k in own and v.shape == own[k].shape
    }
    model.load_state_dict(fitting, strict=False)
    return fit.skipped
