"""Block and pixel shuffle: the paper's fixed permutation, checked against brute force."""

from __future__ import annotations

import pytest
import torch

from transferlens.data.shuffle import (
    InputShuffle,
    block_shuffle,
    block_shuffle_reference,
    image_seed,
    make_shuffle,
    pixel_shuffle,
)
from transferlens.errors import UserInputError


def _blocks(image: torch.Tensor, b: int) -> list[torch.Tensor]:
    """Row-major list of the [C, b, b] blocks of one image (brute force)."""
    _, h, w = image.shape
    return [image[:, r : r + b, c : c + b] for r in range(0, h, b) for c in range(0, w, b)]


def _reference_block_shuffle(x: torch.Tensor, b: int, seed: int) -> torch.Tensor:
    """The module docstring's formula, one block at a time."""
    n, c, h, w = x.shape
    perm = torch.randperm((h // b) * (w // b), generator=torch.Generator().manual_seed(seed))
    out = torch.empty_like(x)
    for i in range(n):
        source = _blocks(x[i], b)
        for j, (r, col) in enumerate((r, col) for r in range(0, h, b) for col in range(0, w, b)):
            out[i, :, r : r + b, col : col + b] = source[int(perm[j])]
    return out


# The kernels against the reference, on both sides of their thresholds: test_kernels.py.
@pytest.mark.parametrize(
    ("b", "h", "w"),
    [(1, 8, 8), (2, 8, 8), (4, 8, 12), (3, 6, 9), (8, 16, 24), (16, 32, 32), (12, 36, 24)],
)
def test_block_shuffle_and_its_reference_match_brute_force(b: int, h: int, w: int) -> None:
    x = torch.randn(3, 3, h, w)
    expected = _reference_block_shuffle(x, b, 7)
    assert torch.equal(block_shuffle_reference(x, b, seed=7), expected)
    assert torch.equal(block_shuffle(x, b, seed=7), expected)


def test_per_image_block_shuffle_is_the_reference_with_each_image_s_seed() -> None:
    x = torch.randn(4, 3, 8, 12)
    x[3] = x[0]
    ids = [3, 0, 17, 3]
    out = block_shuffle(x, 4, seed=9, per_image=True, image_ids=ids)
    for k, image_id in enumerate(ids):
        expected = block_shuffle_reference(x[k : k + 1], 4, image_seed(9, image_id))
        assert torch.equal(out[k : k + 1], expected)
    assert torch.equal(out[0], out[3])  # the same image and id: the same result


@pytest.mark.parametrize(("b", "per_image"), [(2, False), (8, False), (16, False), (4, True)])
def test_out_buffer_receives_the_same_result(b: int, per_image: bool) -> None:
    x = torch.randn(3, 3, 16, 16)
    out = torch.full_like(x, float("nan"))
    returned = block_shuffle(x, b, seed=5, per_image=per_image, out=out)
    assert returned is out
    assert torch.equal(out, block_shuffle(x, b, seed=5, per_image=per_image))
    assert torch.equal(block_shuffle(x, 16, seed=5, out=out), x)  # whole image: a copy


def test_a_bad_out_buffer_is_refused() -> None:
    x = torch.randn(2, 3, 8, 8)
    for bad, message in [
        (torch.empty(2, 3, 8, 4), "must match"),
        (torch.empty(2, 3, 8, 8, dtype=torch.float64), "must match"),
        (torch.empty(2, 3, 8, 8).transpose(2, 3), "contiguous"),
        (x, "share memory"),
    ]:
        with pytest.raises(ValueError, match=message):
            block_shuffle(x, 2, seed=1, out=bad)


def test_every_output_block_is_an_input_block_with_channels_together() -> None:
    x = torch.randn(2, 3, 16, 16)
    out = block_shuffle(x, 4, seed=1234)
    for i in range(2):
        inputs = _blocks(x[i], 4)
        outputs = _blocks(out[i], 4)
        matches = [
            next(k for k, block in enumerate(inputs) if torch.equal(block, o)) for o in outputs
        ]
        assert sorted(matches) == list(range(16))  # a permutation of the blocks
        assert matches != list(range(16))  # and not the identity


def test_same_permutation_for_every_image_and_every_call() -> None:
    # Build images whose pixels carry their own position, so the permutation is readable.
    positions = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)
    train = positions.expand(5, 3, 16, 16) + torch.arange(5).view(5, 1, 1, 1) * 1000
    test = positions.expand(2, 3, 16, 16) - 7.0
    out_train = block_shuffle(train, 2, seed=1235)
    out_test = block_shuffle(test, 2, seed=1235)
    where = out_train[0, 0]
    for i in range(5):
        assert torch.equal(out_train[i] - i * 1000, where.expand(3, 16, 16))
    assert torch.equal(out_test[1] + 7.0, where.expand(3, 16, 16))
    assert torch.equal(block_shuffle(train[3:4], 2, seed=1235), out_train[3:4])
    assert not torch.equal(block_shuffle(train, 2, seed=1236), out_train)


def test_whole_image_block_is_identity() -> None:
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(block_shuffle(x, 8, seed=3), x)


def test_independent_of_global_rng_and_dtype() -> None:
    x = torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    first = block_shuffle(x, 2, seed=5)
    torch.manual_seed(99)
    assert torch.equal(block_shuffle(x, 2, seed=5), first)
    assert first.dtype == torch.uint8
    assert torch.equal(block_shuffle(x.double(), 2, seed=5), first.double())


def test_pixel_shuffle_is_a_permutation_mixing_channels() -> None:
    c, h, w = 3, 4, 4
    x = torch.arange(2 * c * h * w, dtype=torch.float32).reshape(2, c, h, w)
    out = pixel_shuffle(x, seed=1234)
    assert out.shape == x.shape
    for i in range(2):
        assert torch.equal(out[i].flatten().sort().values, x[i].flatten())
    # Some value changes channel (block shuffle never does that).
    source_channel = (out[0] // (h * w)).long()
    target_channel = torch.arange(c).view(c, 1, 1).expand(c, h, w)
    assert (source_channel != target_channel).any()
    # The same permutation for both images.
    assert torch.equal(out[1] - out[0], torch.full_like(out[0], c * h * w))
    perm = torch.randperm(c * h * w, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(out[0].flatten(), x[0].flatten()[perm])


def test_block_size_must_divide_the_image() -> None:
    with pytest.raises(UserInputError, match=r"block_size 5 .*32x32"):
        block_shuffle(torch.zeros(1, 3, 32, 32), 5, seed=0)
    with pytest.raises(UserInputError, match=r"block_size 4 .*8x6"):
        block_shuffle(torch.zeros(1, 3, 8, 6), 4, seed=0)
    with pytest.raises(UserInputError, match="block_size"):
        make_shuffle(-1, seed=0)


def test_transform_on_single_images_equals_batch_function() -> None:
    x = torch.randn(4, 3, 8, 8)
    for block_size, batch_fn in [
        (2, lambda t: block_shuffle(t, 2, 11)),
        (0, lambda t: pixel_shuffle(t, 11)),
    ]:
        transform = make_shuffle(block_size, seed=11)
        assert isinstance(transform, InputShuffle)
        batched = batch_fn(x)
        assert torch.equal(transform(x), batched)
        for i in range(4):
            assert torch.equal(transform(x[i]), batched[i])
    assert make_shuffle(None, seed=11) is None


def test_per_image_permutations_differ_and_are_keyed_by_image_id() -> None:
    positions = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8).expand(6, 3, 8, 8)
    for block_size in (2, 0):
        shuffle = InputShuffle(block_size, seed=1234, per_image=True)
        out = shuffle(positions.contiguous())
        orders = {tuple(out[i].flatten().tolist()) for i in range(6)}
        assert len(orders) == 6
        # Image 4 is shuffled the same way alone (given its id) as inside the batch.
        assert torch.equal(shuffle(positions[4], image_ids=[4]), out[4])
        for i in range(6):
            assert torch.equal(out[i].flatten().sort().values, positions[i].flatten().sort().values)
    # Per-image block shuffle still moves whole blocks with all channels.
    out = block_shuffle(torch.randn(3, 3, 8, 8), 4, seed=1, per_image=True)
    assert out.shape == (3, 3, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_permutation_on_cuda() -> None:
    x = torch.randn(3, 3, 16, 16)
    for block_size in (1, 4, 0):
        shuffle = make_shuffle(block_size, seed=1234)
        assert torch.equal(shuffle(x.cuda()).cpu(), shuffle(x))
