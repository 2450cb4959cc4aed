"""Checks of the arguments every analysis shares; each failure is one UserInputError line."""

from __future__ import annotations

import math

from transferlens.errors import UserInputError
from transferlens.metrics import TASKS


def check_count(value: object, what: str, *, minimum: int) -> int:
    """``value`` if it is an integer ``>= minimum`` (a bool is not); else UserInputError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(f"{what} must be an integer >= {minimum} (got {value!r})")
    return value


def check_grid(values: object, what: str, *, positive: bool) -> list[float]:
    """A non-empty list of finite floats (strictly positive if ``positive``)."""
    try:
        grid = [float(value) for value in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise UserInputError(f"{what} must be a sequence of numbers (got {values!r})") from None
    if not grid:
        raise UserInputError(f"{what} is empty")
    for value in grid:
        if not math.isfinite(value) or (positive and value <= 0):
            need = "finite and > 0" if positive else "finite"
            raise UserInputError(f"{what} must be {need} (got {value})")
    return grid


def check_task(task: str) -> None:
    """``task`` is one of :data:`transferlens.metrics.TASKS`."""
    if task not in TASKS:
        raise UserInputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def check_ordered_loader(loader: object, what: str) -> None:
    """Refuse a DataLoader that draws its examples in a random order.

    The analyses between models pair example ``i`` of one model with example ``i`` of
    the other (agreement cells, CKA's rows, per-example losses along a path): both must
    see the same examples in the same order, and a stored index must name the same
    image on every pass. A loader whose sampler is random (``shuffle=True``'s
    RandomSampler, SubsetRandomSampler, WeightedRandomSampler, a shuffling
    DistributedSampler) is refused with one line naming ``what``; deterministic samplers
    (sequential, sharded) and iterables that are not DataLoaders pass.
    """
    from torch.utils.data import (
        DataLoader,
        DistributedSampler,
        RandomSampler,
        SubsetRandomSampler,
        WeightedRandomSampler,
    )

    if not isinstance(loader, DataLoader):
        return  # a list of batches: its order is fixed
    sampler = getattr(loader.batch_sampler, "sampler", None) or loader.sampler
    random = isinstance(sampler, (RandomSampler, SubsetRandomSampler, WeightedRandomSampler))
    random |= isinstance(sampler, DistributedSampler) and bool(getattr(sampler, "shuffle", False))
    if random:
        raise UserInputError(
            f"{what}: the loader draws examples in a random order "
            f"({type(sampler).__name__}); pass one with shuffle=False so that every model "
            "sees the same examples in the same order"
        )
