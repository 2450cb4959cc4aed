"""How a data set normalises its images, and where the numbers come from.

Every data set feeds a network ``(x / 255 - mean) / std`` per channel. Each one states
its statistics (:class:`Normalisation`, shown in the built data's repr as
``DataSplits.normalisation``); ``data.options`` may replace them:

- ``mean`` and ``std`` together: one number per channel (3), as a list
  (``[0.5, 0.5, 0.5]``) or as text (``"0.5,0.5,0.5"``);
- ``normalize``: ``imagenet`` or ``cifar10`` (named statistics below), or ``auto``
  (in-memory image folders only: the per-channel mean and population std of the
  training split's decoded images, computed exactly from their value counts, so the
  same images always give the same numbers; see :func:`channel_statistics`).

What the built-in data sets use unless told otherwise:

- ``cifar10``: CIFAR-10's training-set statistics (:data:`CIFAR10`), so a CIFAR
  checkpoint from elsewhere sees the inputs it was trained on;
- ``pacs``: CIFAR-10's too: in this project PACS is the target of a CIFAR-10
  pre-training (it plays DomainNet to CIFAR-10's ImageNet), and the paper normalises its
  targets with its source's statistics (DomainNet with ImageNet's), so that P-T's
  network sees the input scale it was pre-trained on and RI-T the same inputs;
- ``image_folder``, ``domainnet``, ``chexpert``: ImageNet's (:data:`IMAGENET`), the
  statistics of the usual pre-trained models and the paper's;
- ``synthetic``: its own fixed statistics (:mod:`transferlens.data.synthetic`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import torch

from transferlens.errors import UserInputError

__all__ = [
    "AUTO",
    "CIFAR10",
    "IMAGENET",
    "NAMED_STATISTICS",
    "NORMALIZATION_OPTIONS",
    "Normalisation",
    "channel_statistics",
    "requested_normalisation",
    "stated_normalisation",
]

# The options every data set with settable statistics accepts.
NORMALIZATION_OPTIONS = ("mean", "std", "normalize")
AUTO = "auto"


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``mean`` and ``std`` of ``x / 255`` and, in words, where they come from."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def __str__(self) -> str:
        def numbers(values: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{value:.4f}" for value in values) + ")"

        return f"mean {numbers(self.mean)}, std {numbers(self.std)}: {self.source}"


# ImageNet's training-set statistics, as torchvision's pre-trained models use them.
IMAGENET = Normalisation((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "ImageNet's statistics")
# CIFAR-10's: the mean and population std of every pixel of the 50,000 training images
# of the original release (Krizhevsky 2009), rounded to 4 places: mean 0.49140, 0.48216,
# 0.44653, std 0.24703, 0.24349, 0.26159; fb.resnet.torch's datasets/cifar10.lua states
# the same as 125.3, 123.0, 113.9 and 63.0, 62.1, 66.7 out of 255. (Not the (0.2023,
# 0.1994, 0.2010) seen in many repositories: that is the mean of per-image stds.) The
# JPEG copy of shared/data gives mean (0.4913, 0.4821, 0.4465), std (0.2452, 0.2428,
# 0.2606): the same means, stds 0.1-0.7% lower (JPEG smooths).
CIFAR10 = Normalisation(
    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "CIFAR-10's training-set statistics"
)
NAMED_STATISTICS = {"imagenet": IMAGENET, "cifar10": CIFAR10}


def _numbers(dataset: str, key: str, value: object, channels: int) -> tuple[float, ...]:
    """``options[key]`` (a list of numbers or "a,b,c") as ``channels`` finite floats."""
    example = ", ".join(["0.5"] * channels)
    items = value.split(",") if isinstance(value, str) else value
    try:
        if isinstance(items, bool) or not isinstance(items, list | tuple):
            raise TypeError
        numbers = tuple(float(item) for item in items)
    except (TypeError, ValueError):
        raise UserInputError(
            f"{dataset}: options.{key}: expected {channels} numbers, e.g. [{example}] "
            f"or '{example.replace(' ', '')}' (got {value!r})"
        ) from None
    if len(numbers) != channels:
        raise UserInputError(
            f"{dataset}: options.{key}: expected {channels} numbers, one per channel "
            f"(got {len(numbers)}: {value!r})"
        )
    if not all(math.isfinite(number) for number in numbers):
        raise UserInputError(f"{dataset}: options.{key}: values must be finite (got {value!r})")
    return numbers


def requested_normalisation(
    dataset: str,
    options: Mapping[str, object],
    default: Normalisation,
    *,
    channels: int = 3,
    auto_allowed: bool = False,
) -> Normalisation | None:
    """The statistics ``options`` ask for (module doc), ``default`` when none; ``None`` = auto.

    ``auto_allowed``: whether ``dataset`` can compute its own (``normalize: auto``).
    Every problem is a one-line :class:`UserInputError` naming the option.
    """
    given = [key for key in ("mean", "std") if key in options]
    if "normalize" in options:
        if given:
            raise UserInputError(f"{dataset}: give options.normalize or options.mean/std, not both")
        return _named(dataset, options["normalize"], auto_allowed)
    if not given:
        return default
    if len(given) == 1:
        missing = "std" if given == ["mean"] else "mean"
        raise UserInputError(
            f"{dataset}: options.{given[0]} needs options.{missing} too (statistics go in pairs)"
        )
    mean = _numbers(dataset, "mean", options["mean"], channels)
    std = _numbers(dataset, "std", options["std"], channels)
    if any(value <= 0 for value in std):
        raise UserInputError(f"{dataset}: options.std: values must be positive (got {std})")
    return Normalisation(mean, std, "options.mean and options.std")


def stated_normalisation(
    dataset: str, options: Mapping[str, object], default: Normalisation, *, channels: int = 3
) -> Normalisation:
    """:func:`requested_normalisation` for a data set that cannot compute its own (no auto)."""
    requested = requested_normalisation(dataset, options, default, channels=channels)
    assert requested is not None  # auto_allowed=False never answers "auto"
    return requested


def _named(dataset: str, value: object, auto_allowed: bool) -> Normalisation | None:
    choices = [*NAMED_STATISTICS, *([AUTO] if auto_allowed else [])]
    if value == AUTO and auto_allowed:
        return None
    if isinstance(value, str) and value in NAMED_STATISTICS:
        named = NAMED_STATISTICS[value]
        return Normalisation(named.mean, named.std, f"{named.source} (options.normalize)")
    hint = "" if auto_allowed or value != AUTO else f" ({dataset} cannot compute its own)"
    raise UserInputError(
        f"{dataset}: options.normalize must be one of {', '.join(choices)} (got {value!r}){hint}"
    )


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of ``images / 255`` (uint8 ``[N, C, H, W]``).

    Exact: each channel's 256 value counts are summed as integers and the moments taken
    as fractions, so the result does not depend on threads, batching or hardware.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.numel() == 0:
        raise ValueError(
            f"expected non-empty uint8 [N, C, H, W] (got {images.dtype} {images.shape})"
        )
    means: list[float] = []
    stds: list[float] = []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).tolist()
        total = sum(counts)
        first = sum(value * count for value, count in enumerate(counts))
        second = sum(value * value * count for value, count in enumerate(counts))
        mean = Fraction(first, total * 255)
        variance = Fraction(second, total * 255 * 255) - mean * mean
        means.append(float(mean))
        stds.append(math.sqrt(variance))
    return tuple(means), tuple(stds)
