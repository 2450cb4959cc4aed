"""The paper's input shuffling: block shuffle and pixel shuffle (analysis 1, feature reuse).

Block shuffle with block size ``b`` cuts each ``[C, H, W]`` image into ``(H/b) x (W/b)``
blocks of ``b x b`` pixels; all ``C`` channels of a block move together. The blocks are
permuted by one permutation ``perm`` fixed by ``seed``::

    perm = torch.randperm((H // b) * (W // b), generator=torch.Generator().manual_seed(seed))
    output block j (row-major block order) = input block perm[j]

Pixel shuffle permutes all ``C * H * W`` values of an image (channels mixed) the same way::

    perm = torch.randperm(C * H * W, generator=torch.Generator().manual_seed(seed))
    output.flatten()[j] = input.flatten()[perm[j]]

The permutation is drawn on the CPU (:mod:`.permutations`), so it is the same on every
device, for every image of a batch, for every batch and every split. ``b == H == W`` is
the identity. ``per_image=True`` (not the paper's protocol) draws a different
permutation for each image instead: image ``k`` uses the generator seeded with
``image_seed(seed, k)``, where ``k`` is the image's id (its index in its data set when a
data set applies the shuffle; its position in the batch otherwise).

:func:`block_shuffle_reference` and :func:`pixel_shuffle_reference` are these
definitions written out; :func:`block_shuffle` and :func:`pixel_shuffle` give the same
values through the fast kernels of :mod:`.shuffle_kernels` (cached indices, gathers of
values or of block rows, or one copy per block; an ``out=`` buffer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from transferlens.data import shuffle_kernels
from transferlens.data.permutations import (
    block_index_from_permutation,
    block_permutation,
    block_permutation_index,
    check_block_size,
    image_seed,
    pixel_permutation_index,
    seeded_generator,
)
from transferlens.errors import UserInputError

__all__ = [
    "InputShuffle",
    "block_permutation",
    "block_permutation_index",
    "block_shuffle",
    "block_shuffle_reference",
    "image_seed",
    "make_shuffle",
    "pixel_permutation_index",
    "pixel_shuffle",
    "pixel_shuffle_reference",
]


def block_shuffle_reference(x: Tensor, block_size: int, seed: int) -> Tensor:
    """The block shuffle as defined: cut into blocks, blocks reordered by ``perm``, put back.

    ``x`` ``[N, C, H, W]`` -> blocks ``[N, (H/b)(W/b), C, b, b]`` in row-major order,
    gathered by ``perm`` (:func:`~.permutations.block_permutation`) along the block axis.
    """
    n, c, h, w = x.shape
    b = block_size
    rows, cols = h // b, w // b
    perm = block_permutation(b, h, w, seed)
    blocks = x.reshape(n, c, rows, b, cols, b).permute(0, 2, 4, 1, 3, 5)
    moved = blocks.reshape(n, rows * cols, c, b, b)[:, perm]
    return moved.reshape(n, rows, cols, c, b, b).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def pixel_shuffle_reference(x: Tensor, seed: int) -> Tensor:
    """The pixel shuffle as defined: ``output.flatten()[j] = input.flatten()[perm[j]]`` per image."""
    n = x.shape[0]
    perm = torch.randperm(x[0].numel(), generator=seeded_generator(seed))
    return x.reshape(n, -1)[:, perm].reshape(x.shape)


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
    check_block_size(block_size, h, w)
    if block_size == h == w:
        return x if out is None else out.copy_(x)
    if not per_image:
        return shuffle_kernels.block_shuffle_into(x, block_size, seed, out)
    indices = [
        block_index_from_permutation(
            block_permutation(block_size, h, w, image_seed(seed, k)), block_size, h, w
        )
        for k in _image_ids(x, image_ids)
    ]
    index = torch.stack(indices).to(x.device)[:, None, :].expand(n, c, h * w)
    flat = x.reshape(n, c, h * w)
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
    if not per_image:
        return shuffle_kernels.pixel_shuffle_gather(x, seed)
    n, size = x.shape[0], x[0].numel()
    indices = [
        torch.randperm(size, generator=seeded_generator(image_seed(seed, k)))
        for k in _image_ids(x, image_ids)
    ]
    return x.reshape(n, size).gather(1, torch.stack(indices).to(x.device)).reshape(x.shape)


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
