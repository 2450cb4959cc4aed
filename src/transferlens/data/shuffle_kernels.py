"""Fast kernels for the block and pixel shuffle: the values of :mod:`.shuffle`, in less time.

:func:`block_shuffle_into` is one dispatch over three ways to move the same values,
each tested equal to ``shuffle.block_shuffle_reference`` (``tests/test_kernels.py``):

* value gather (``b < ROW_GATHER_MIN_BLOCK``): one ``index_select`` of the ``H*W``
  values of every channel, by :func:`.permutations.block_permutation_index`;
* row gather (``b >= ROW_GATHER_MIN_BLOCK``): one ``index_select`` of the runs of
  ``b`` contiguous values that make up the blocks' rows (:func:`block_row_index`);
* block copies (CPU, ``b >= BLOCK_COPY_MIN_BLOCK`` and ``N*C*b*b >=
  BLOCK_COPY_MIN_VALUES``): one strided ``[N, C, b, b]`` copy per block
  (:func:`block_moves`).

:func:`pixel_shuffle_gather` is the pixel shuffle's one gather. The block shuffle
writes into a caller's ``out=`` buffer when given one (on a CPU most of a fresh
result's cost is the page faults of its new memory); both keep their indices on the
device they run on (:class:`DeviceIndexCache`). Why the thresholds have their values, with timings:
``benchmarks/README.md`` ("Why these thresholds").
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from transferlens.data.permutations import (
    block_permutation,
    block_permutation_index,
    pixel_permutation_index,
)

# From this block size on, a block row is long enough that gathering rows beats values.
ROW_GATHER_MIN_BLOCK = 8
# On the CPU, one strided copy per block beats any gather from this block size on...
BLOCK_COPY_MIN_BLOCK = 16
# ...when each copy moves at least this many values (N * C * b * b): fewer lose to the
# per-copy overhead.
BLOCK_COPY_MIN_VALUES = 32_768


class DeviceIndexCache:
    """One copy per device of each CPU index, so that no batch copies an index to its device.

    CPU indices are returned as they are; at most ``max_entries`` device copies are
    kept (all are dropped when that is exceeded).
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._copies: dict[tuple, Tensor] = {}

    def on_device(self, key: tuple, make: Callable[[], Tensor], device: torch.device) -> Tensor:
        """``make()`` (a CPU index, cached by its maker) on ``device``; ``key`` names it."""
        if device.type == "cpu":
            return make()
        cache_key = (*key, str(device))
        cached = self._copies.get(cache_key)
        if cached is None:
            if len(self._copies) > self.max_entries:
                self._copies.clear()
            cached = self._copies[cache_key] = make().to(device)
        return cached


_INDICES = DeviceIndexCache()


@lru_cache(maxsize=64)
def block_row_index(block_size: int, height: int, width: int, seed: int) -> Tensor:
    """The block index by runs of ``b`` values: ``out`` viewed as ``[H*W/b, b]`` rows is
    ``in`` viewed so, rows ``[idx]`` (row ``k`` holds pixels ``k*b .. k*b + b - 1``)."""
    return block_permutation_index(block_size, height, width, seed)[::block_size] // block_size


@lru_cache(maxsize=64)
def block_moves(
    block_size: int, height: int, width: int, seed: int
) -> tuple[tuple[int, int, int, int], ...]:
    """``(row, col, from_row, from_col)`` per output block, in block units (row-major)."""
    cols = width // block_size
    perm = block_permutation(block_size, height, width, seed).tolist()
    return tuple((j // cols, j % cols, p // cols, p % cols) for j, p in enumerate(perm))


def _copies_blocks(x: Tensor, block_size: int) -> bool:
    n, c = x.shape[:2]
    return (
        x.device.type == "cpu"
        and block_size >= BLOCK_COPY_MIN_BLOCK
        and n * c * block_size * block_size >= BLOCK_COPY_MIN_VALUES
    )


def _copy_blocks(x: Tensor, out: Tensor, block_size: int, seed: int) -> Tensor:
    """``out`` (contiguous) filled block by block: one ``[N, C, b, b]`` copy per block."""
    n, c, h, w = x.shape
    b = block_size
    source = x.contiguous().view(n, c, h // b, b, w // b, b)
    target = out.view(n, c, h // b, b, w // b, b)
    for row, col, from_row, from_col in block_moves(b, h, w, int(seed)):
        target[:, :, row, :, col].copy_(source[:, :, from_row, :, from_col])
    return out


def block_shuffle_into(x: Tensor, block_size: int, seed: int, out: Tensor | None = None) -> Tensor:
    """``x`` ``[N, C, H, W]``'s blocks permuted by the seed's permutation, the fastest way.

    Into ``out`` (contiguous, like ``x``, not sharing its memory) when given, else a new
    contiguous tensor. The caller has checked ``x``, ``block_size`` and ``out``.
    """
    n, c, h, w = x.shape
    if _copies_blocks(x, block_size):
        if out is None:
            out = torch.empty_like(x, memory_format=torch.contiguous_format)
        return _copy_blocks(x, out, block_size, seed)
    key = (block_size, h, w, int(seed))
    if block_size >= ROW_GATHER_MIN_BLOCK:
        index = _INDICES.on_device(("rows", *key), lambda: block_row_index(*key), x.device)
        shape = (n * c, h * w // block_size, block_size)
    else:
        index = _INDICES.on_device(
            ("values", *key), lambda: block_permutation_index(*key), x.device
        )
        # A 2-D view: index_select on its dim 1 is far faster than on dim 2 of a 3-D one.
        shape = (n * c, h * w)
    source = x.contiguous().view(shape)
    if out is None:
        return source.index_select(1, index).view(n, c, h, w)
    torch.index_select(source, 1, index, out=out.view(shape))
    return out


def pixel_shuffle_gather(x: Tensor, seed: int) -> Tensor:
    """``x`` ``[N, C, H, W]``'s ``C*H*W`` values of each image permuted by the seed's permutation."""
    n, size = x.shape[0], x[0].numel()
    index = _INDICES.on_device(
        ("pixel", size, int(seed)), lambda: pixel_permutation_index(size, int(seed)), x.device
    )
    return x.reshape(n, size).index_select(1, index).reshape(x.shape)
