"""Block shuffling for patch models (a ViT): what a block smaller than, equal to or larger
than the patch does to the patches the patch embedding sees, and the block sizes a study
accepts at ``plan`` (any size that divides the image, above or below the patch size).

A ViT's patch embedding is a convolution with kernel = stride = patch size ``p``: patch
``(i, j)`` is the ``p x p`` square at ``(i p, j p)``. The claims of docs/block-shuffle.md
are checked on those squares.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_STUDY
from transferlens.cli import main
from transferlens.data.permutations import block_permutation
from transferlens.data.shuffle import block_shuffle

SIZE, PATCH = 16, 4


def patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, (H/p)(W/p), C, p, p]``: the patches in row-major order."""
    n, c, h, w = x.shape
    tiles = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(n, (h // p) * (w // p), c, p, p)


def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def test_a_block_equal_to_the_patch_permutes_whole_patches() -> None:
    """Each patch arrives intact, at the place the block permutation gives it: a ViT sees
    its usual patches at permuted positions."""
    x = images()
    shuffled = block_shuffle(x, PATCH, seed=3)
    perm = block_permutation(PATCH, SIZE, SIZE, 3)
    torch.testing.assert_close(patches(shuffled, PATCH), patches(x, PATCH)[:, perm], rtol=0, atol=0)
    embed = torch.nn.Conv2d(3, 8, kernel_size=PATCH, stride=PATCH)
    tokens, moved = (embed(image).flatten(2).transpose(1, 2) for image in (x, shuffled))
    torch.testing.assert_close(moved, tokens[:, perm])  # the same tokens, positions permuted


def test_a_block_larger_than_the_patch_moves_groups_of_patches() -> None:
    """A block of 2 x 2 patches moves as one: every patch stays intact and its three
    neighbours in the block stay beside it."""
    x, block = images(), 2 * PATCH
    shuffled = block_shuffle(x, block, seed=5)
    perm = block_permutation(block, SIZE, SIZE, 5)
    within = patches(shuffled, block)  # [N, blocks, C, 8, 8]: each is an input block
    torch.testing.assert_close(within, patches(x, block)[:, perm], rtol=0, atol=0)
    original = {tuple(p.flatten().tolist()) for p in patches(x, PATCH)[0]}
    assert {tuple(p.flatten().tolist()) for p in patches(shuffled, PATCH)[0]} == original


def test_a_block_smaller_than_the_patch_shuffles_pixels_inside_each_patch() -> None:
    """Blocks of 2 x 2 pixels: the image keeps its pixels, but the patch embedding sees
    patches that are none of the original ones (pieces of several)."""
    x = images()
    shuffled = block_shuffle(x, 2, seed=7)
    for image, moved in zip(x, shuffled):
        assert torch.equal(image.flatten().sort().values, moved.flatten().sort().values)
    original = {tuple(p.flatten().tolist()) for p in patches(x, PATCH)[0]}
    seen = [tuple(p.flatten().tolist()) for p in patches(shuffled, PATCH)[0]]
    assert sum(patch in original for patch in seen) < len(seen) // 2


VIT = {
    "name": "timm:vit_tiny_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
}


def _study(block_sizes: list) -> dict:
    data = {**TINY_STUDY["data_defaults"], "image_size": 32}
    sweep = {"targets": ["real"], "block_sizes": block_sizes}
    return {**TINY_STUDY, "model": VIT, "data_defaults": data, "block_shuffle": sweep}


def test_plan_accepts_blocks_above_and_below_the_patch_size(study_file, tmp_path) -> None:
    pytest.importorskip("timm")
    path = study_file(_study([None, 16, 8, 4, 2, 1, 0]))  # patch 4 on a 32 px image
    assert main(["plan", str(path), "--out", str(tmp_path / "out")]) == 0


def test_plan_refuses_a_block_that_does_not_divide_the_image(study_file, tmp_path, capsys) -> None:
    pytest.importorskip("timm")
    path = study_file(_study([None, 8, 5]))
    out = tmp_path / "out"
    assert main(["plan", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert "block_shuffle.block_sizes: 5 does not divide the image size 32" in error
    assert not out.exists()
