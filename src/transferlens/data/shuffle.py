"""The paper's input shuffling: block shuffle and pixel shuffle (analysis 1, feature reuse).

Block shuffle with block size ``b`` cuts each ``[C, H, W]`` image into ``(H/b) x (W/b)``
blocks of ``b x b`` pixels; all ``C`` channels of a block move together. The blocks are
permuted by one permutation ``perm`` fixed by ``seed``::

    perm = torch.randperm((H // b) * (W // b), generator=torch.Generator().manual_seed(seed))
    output block j (row-major block order) = input block perm[j]

Pixel shuffle permutes all ``C * H * W`` values of an image (channels mixed) the same way::

    perm = torch.randperm(C * H * W, generator=torch.Generator().manual_seed(seed))
    output.flatten()[j] = input.flatten()[perm[j]]

The permutation is drawn on the CPU, so it is the same on every device, for every image
of a batch, for every batch and every split. ``b == H == W`` is the identity.

Both are one gather along the flattened image with a precomputed (cached) index: no
per-image loop. From ``b >= 8`` the block shuffle gathers whole block rows (``b``
contiguous values) instead of single values: 2-4x faster there. On the CPU, large blocks
(``b >= 16``, ``N * C * b * b >= 32,768``) are moved by one strided copy per block
for the whole batch instead (1.5-1.8x faster than the row gather). ``out=`` writes into
a caller's buffer: on a CPU most of a fresh 77 MB result's cost is the page faults of
its new memory (``x.clone()`` of ``[128, 3, 224, 224]`` takes ~20 ms here, a copy into
an existing buffer ~4 ms). ``per_image=True`` (not the paper's protocol) draws a different
permutation for each image instead: image ``k`` uses the generator seeded with
``image_seed(seed, k)``, where ``k`` is the image's id (its index in its data set when a
data set applies the shuffle; its position in the batch otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from transferlens.errors import UserInputError

__all__ = [
    "InputShuffle",
    "block_moves",
    "block_permutation_index",
    "block_row_index",
    "block_shuffle",
    "image_seed",
    "make_shuffle",
    "pixel_permutation_index",
    "pixel_shuffle",
]


def _generator(seed: int) -> torch.Generator:
    # manual_seed accepts [-2**63, 2**64); fold anything else into that range.
    return torch.Generator(device="cpu").manual_seed(int(seed) % (2**64))


def image_seed(seed: int, image_id: int) -> int:
    """The seed of image ``image_id``'s own permutation under ``per_image=True``.

    Mixed by numpy's SeedSequence so that ``(seed, id)`` pairs do not collide the way
    ``seed + id`` would (seed 1234 image 1 vs seed 1235 image 0).
    """
    entropy = (int(seed) % (2**63), int(image_id) % (2**63))
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def _check_block_size(block_size: int, height: int, width: int) -> None:
    if block_size <= 0:
        raise UserInputError(f"block_size must be a positive integer (got {block_size})")
    if height % block_size or width % block_size:
        raise UserInputError(
            f"block_size {block_size} does not divide the image size {height}x{width}; "
            "choose a block size that divides both height and width"
        )


def _block_index_from_perm(perm: Tensor, block_size: int, height: int, width: int) -> Tensor:
    """Flat pixel index (into ``H*W``) that moves block ``perm[j]`` to block position ``j``."""
    rows, cols = height // block_size, width // block_size
    pixel_ids = torch.arange(height * width).reshape(rows, block_size, cols, block_size)
    blocks = pixel_ids.permute(0, 2, 1, 3).reshape(rows * cols, block_size, block_size)
    moved = blocks[perm].reshape(rows, cols, block_size, block_size)
    return moved.permute(0, 2, 1, 3).reshape(height * width)


def _block_perm(block_size: int, height: int, width: int, seed: int) -> Tensor:
    """The module docstring's ``perm``: output block ``j`` is input block ``perm[j]``."""
    _check_block_size(block_size, height, width)
    num_blocks = (height // block_size) * (width // block_size)
    return torch.randperm(num_blocks, generator=_generator(seed))


@lru_cache(maxsize=64)
def block_permutation_index(block_size: int, height: int, width: int, seed: int) -> Tensor:
    """CPU int64 index ``idx`` of length ``H*W`` with ``out.flat_hw = in.flat_hw[idx]``."""
    perm = _block_perm(block_size, height, width, seed)
    return _block_index_from_perm(perm, block_size, height, width)


@lru_cache(maxsize=64)
def block_moves(
    block_size: int, height: int, width: int, seed: int
) -> tuple[tuple[int, int, int, int], ...]:
    """``(row, col, from_row, from_col)`` per output block, in block units (row-major)."""
    cols = width // block_size
    perm = _block_perm(block_size, height, width, seed).tolist()
    return tuple((j // cols, j % cols, p // cols, p % cols) for j, p in enumerate(perm))


@lru_cache(maxsize=64)
def block_row_index(block_size: int, height: int, width: int, seed: int) -> Tensor:
    """The block index by runs of ``b`` values: ``out`` viewed as ``[H*W/b, b]`` rows is
    ``in`` viewed so, rows ``[idx]`` (row ``k`` holds pixels ``k*b .. k*b + b - 1``)."""
    return block_permutation_index(block_size, height, width, seed)[::block_size] // block_size


@lru_cache(maxsize=16)
def pixel_permutation_index(num_values: int, seed: int) -> Tensor:
    """CPU int64 permutation of ``C*H*W`` values: ``out.flatten() = in.flatten()[idx]``."""
    return torch.randperm(num_values, generator=_generator(seed))


# From this block size on, whole block rows are gathered (measured on [128, 3, 224, 224]:
# b = 4 by values 61 ms vs by rows 67; b = 8 75 vs 65; b = 16 79 vs 47; b = 56 55 vs 42).
ROW_GATHER_MIN_BLOCK = 8
# On the CPU, one strided copy per block beats any gather once each copy moves enough
# values in long enough runs (into a buffer, 2 threads: [128, 3, 224, 224] b = 16 9.5 vs
# 16.6 ms, b = 32 5.7 vs 9.3, b = 56 5.7 vs 8.3; [128, 3, 64, 64] b = 16 0.24 vs 0.40;
# but b = 8 is a tie at 224 px and loses at 32 px, 0.70 vs 0.38 ms for 512 images).
BLOCK_COPY_MIN_BLOCK = 16
BLOCK_COPY_MIN_VALUES = 32_768  # N * C * b * b, moved by each copy
_DEVICE_INDEX: dict[tuple, Tensor] = {}


def _on_device(index: Tensor, key: tuple, device: torch.device) -> Tensor:
    # Keep one copy of each cached index per device (no host-to-device copy per batch).
    if device.type == "cpu":
        return index
    cache_key = (*key, str(device))
    cached = _DEVICE_INDEX.get(cache_key)
    if cached is None:
        if len(_DEVICE_INDEX) > 64:
            _DEVICE_INDEX.clear()
        cached = _DEVICE_INDEX[cache_key] = index.to(device)
    return cached


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


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4:
        raise UserInputError(f"expected a batch [N, C, H, W] (got shape {tuple(x.shape)})")


def _image_ids(x: Tensor, image_ids: Sequence[int] | Tensor | None) -> list[int]:
    if image_ids is None:
        return list(range(x.shape[0]))
    ids = [int(i) for i in image_ids]
    if len(ids) != x.shape[0]:
        raise ValueError(f"{len(ids)} image ids for a batch of {x.shape[0]} images")
    return ids


def _check_out(x: Tensor, out: Tensor | None) -> None:
    if out is None:
        return
    if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(
            f"out must match the input: {tuple(out.shape)} {out.dtype} on {out.device} "
            f"given for {tuple(x.shape)} {x.dtype} on {x.device}"
        )
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")
    if out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        raise ValueError("out must not share memory with the input")


def block_shuffle(
    x: Tensor,
    block_size: int,
    seed: int,
    per_image: bool = False,
    image_ids: Sequence[int] | Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """Permute the ``b x b`` blocks of every image of ``x`` ``[N, C, H, W]`` (see module doc).

    Returns a new tensor of the same shape, dtype and device (``x`` itself when the
    block is the whole image), or ``out`` (a contiguous tensor like ``x``, not sharing
    its memory) filled with the result. Raises :class:`UserInputError` if
    ``block_size`` does not divide both H and W.
    """
    _check_batch(x)
    _check_out(x, out)
    n, c, h, w = x.shape
    _check_block_size(block_size, h, w)
    if block_size == h == w:
        return x if out is None else out.copy_(x)
    if not per_image:
        if _copies_blocks(x, block_size):
            if out is None:
                out = torch.empty_like(x, memory_format=torch.contiguous_format)
            return _copy_blocks(x, out, block_size, seed)
        key = (block_size, h, w, int(seed))
        if block_size >= ROW_GATHER_MIN_BLOCK:
            index = _on_device(block_row_index(*key), ("rows", *key), x.device)
            shape = (n * c, h * w // block_size, block_size)
        else:
            index = _on_device(block_permutation_index(*key), ("block", *key), x.device)
            # index_select on dim 1 of a 2-D view is ~20x faster than on dim 2 of a 3-D one.
            shape = (n * c, h * w)
        source = x.contiguous().view(shape)
        if out is None:
            return source.index_select(1, index).view(n, c, h, w)
        torch.index_select(source, 1, index, out=out.view(shape))
        return out
    flat = x.reshape(n, c, h * w)
    indices = [
        _block_index_from_perm(_block_perm(block_size, h, w, image_seed(seed, k)), block_size, h, w)
        for k in _image_ids(x, image_ids)
    ]
    index = torch.stack(indices).to(x.device)[:, None, :].expand(n, c, h * w)
    if out is None:
        return flat.gather(2, index).reshape(n, c, h, w)
    torch.gather(flat, 2, index, out=out.view(n, c, h * w))
    return out


def pixel_shuffle(
    x: Tensor,
    seed: int,
    per_image: bool = False,
    image_ids: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """Permute all ``C*H*W`` values of every image of ``x`` ``[N, C, H, W]`` (see module doc)."""
    _check_batch(x)
    n = x.shape[0]
    size = x[0].numel()
    flat = x.reshape(n, size)
    if not per_image:
        index = _on_device(
            pixel_permutation_index(size, int(seed)), ("pixel", size, int(seed)), x.device
        )
        return flat.index_select(1, index).reshape(x.shape)
    indices = [
        torch.randperm(size, generator=_generator(image_seed(seed, k)))
        for k in _image_ids(x, image_ids)
    ]
    return flat.gather(1, torch.stack(indices).to(x.device)).reshape(x.shape)


class InputShuffle:
    """Block (``block_size > 0``) or pixel (``block_size == 0``) shuffle as a callable.

    Works on a batch ``[N, C, H, W]`` or on a single image ``[C, H, W]`` (so it can be a
    torchvision-style transform); a single image gets exactly what it would get as a
    member of a batch. ``image_ids`` (the data-set indices of the images) only matter
    with ``per_image=True``; a single image without an id is image 0.
    """

    def __init__(self, block_size: int, seed: int, per_image: bool = False) -> None:
        if block_size < 0:
            raise UserInputError(f"block_size must be >= 0, 0 = pixel shuffle (got {block_size})")
        self.block_size = int(block_size)
        self.seed = int(seed)
        self.per_image = bool(per_image)

    def __call__(self, x: Tensor, image_ids: Sequence[int] | Tensor | None = None) -> Tensor:
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        if self.block_size == 0:
            out = pixel_shuffle(batch, self.seed, self.per_image, image_ids)
        else:
            out = block_shuffle(batch, self.block_size, self.seed, self.per_image, image_ids)
        return out[0] if single else out

    def __repr__(self) -> str:
        kind = "pixel" if self.block_size == 0 else f"block_size={self.block_size}"
        return f"InputShuffle({kind}, seed={self.seed}, per_image={self.per_image})"


def make_shuffle(block_size: int | None, seed: int, per_image: bool = False) -> InputShuffle | None:
    """``None`` -> no shuffling; ``0`` -> pixel shuffle; ``b > 0`` -> ``b x b`` block shuffle."""
    if block_size is None:
        return None
    return InputShuffle(block_size, seed, per_image)
