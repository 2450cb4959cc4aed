"""The permutations of the paper's shuffles, drawn from a seed (see :mod:`.shuffle`).

Every permutation is drawn here, on the CPU, so it is the same on every device: the
block shuffle's and the pixel shuffle's, and each image's own under ``per_image=True``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from transferlens.errors import UserInputError


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (any integer)."""
    # manual_seed accepts [-2**63, 2**64); fold anything else into that range.
    return torch.Generator(device="cpu").manual_seed(int(seed) % (2**64))


def image_seed(seed: int, image_id: int) -> int:
    """The seed of image ``image_id``'s own permutation under ``per_image=True``.

    Mixed by numpy's SeedSequence so that ``(seed, id)`` pairs do not collide the way
    ``seed + id`` would (seed 1234 image 1 vs seed 1235 image 0).
    """
    entropy = (int(seed) % (2**63), int(image_id) % (2**63))
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def check_block_size(block_size: int, height: int, width: int) -> None:
    """:class:`UserInputError` unless ``block_size`` is positive and divides both sides."""
    if block_size <= 0:
        raise UserInputError(f"block_size must be a positive integer (got {block_size})")
    if height % block_size or width % block_size:
        raise UserInputError(
            f"block_size {block_size} does not divide the image size {height}x{width}; "
            "choose a block size that divides both height and width"
        )


def block_permutation(block_size: int, height: int, width: int, seed: int) -> Tensor:
    """``perm``: output block ``j`` is input block ``perm[j]`` (blocks in row-major order).

    ``torch.randperm((H // b) * (W // b))`` from a CPU generator seeded with ``seed``.
    """
    check_block_size(block_size, height, width)
    num_blocks = (height // block_size) * (width // block_size)
    return torch.randperm(num_blocks, generator=seeded_generator(seed))


def block_index_from_permutation(perm: Tensor, block_size: int, height: int, width: int) -> Tensor:
    """Flat pixel index (into ``H*W``) that moves block ``perm[j]`` to block position ``j``."""
    rows, cols = height // block_size, width // block_size
    pixel_ids = torch.arange(height * width).reshape(rows, block_size, cols, block_size)
    blocks = pixel_ids.permute(0, 2, 1, 3).reshape(rows * cols, block_size, block_size)
    moved = blocks[perm].reshape(rows, cols, block_size, block_size)
    return moved.permute(0, 2, 1, 3).reshape(height * width)


@lru_cache(maxsize=64)
def block_permutation_index(block_size: int, height: int, width: int, seed: int) -> Tensor:
    """CPU int64 index ``idx`` of length ``H*W`` with ``out.flat_hw = in.flat_hw[idx]``.

    Raises :class:`UserInputError` if ``block_size`` does not divide both sides.
    """
    perm = block_permutation(block_size, height, width, seed)
    return block_index_from_permutation(perm, block_size, height, width)


@lru_cache(maxsize=16)
def pixel_permutation_index(num_values: int, seed: int) -> Tensor:
    """CPU int64 permutation of ``C*H*W`` values: ``out.flatten() = in.flatten()[idx]``."""
    return torch.randperm(num_values, generator=seeded_generator(seed))
