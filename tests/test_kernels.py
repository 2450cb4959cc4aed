"""Every fast kernel against its plain reference, on both sides of every threshold it uses."""

from __future__ import annotations

import pytest
import torch

from transferlens.analysis import cka_kernels
from transferlens.analysis.cka_estimators import gram_linear_reference, shifted_gram_reference
from transferlens.data import shuffle_kernels
from transferlens.data.shuffle import (
    block_shuffle,
    block_shuffle_reference,
    pixel_shuffle,
    pixel_shuffle_reference,
)

HAS_CONV_PRECISION = hasattr(getattr(torch.backends.mkldnn, "conv", None), "fp32_precision")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- CKA: Gram products ----------------------------------------------------------------

MIN_ROWS = cka_kernels.ONEDNN_MIN_ROWS
BLOCKED_ROWS = 2 * cka_kernels.SYMMETRIC_GRAM_MIN_ROWS
MAX_FEATURES = cka_kernels.ONEDNN_MAX_FEATURES
# Rows on both sides of the oneDNN and the blocking thresholds, and two levels of blocks.
ROWS = [5, MIN_ROWS - 1, MIN_ROWS, BLOCKED_ROWS - 1, BLOCKED_ROWS, 300, 513]


def assert_gram_close(gram: torch.Tensor, reference: torch.Tensor, rtol: float) -> None:
    """Equal up to rounding: entries within ``rtol`` of the largest one."""
    scale = float(reference.abs().max())
    torch.testing.assert_close(gram.double(), reference.double(), rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("n", ROWS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gram_is_the_exactly_symmetric_reference_product(n: int, dtype: torch.dtype) -> None:
    x = (torch.randn(n, 37, generator=generator(n)) + 3).to(dtype)
    gram = cka_kernels.gram(x)
    assert gram.dtype == dtype and gram.shape == (n, n)
    assert torch.equal(gram, gram.T)
    reference = gram_linear_reference(x.double())
    assert_gram_close(gram, reference, rtol=1e-6 if dtype == torch.float32 else 1e-13)
    if dtype == torch.float64 and n < BLOCKED_ROWS:  # one product: its upper triangle as is
        assert torch.equal(gram.triu(), gram_linear_reference(x).triu())


@pytest.mark.parametrize("n", [MIN_ROWS - 1, MIN_ROWS, BLOCKED_ROWS])
@pytest.mark.parametrize("d", [MAX_FEATURES, MAX_FEATURES + 1])
def test_gram_of_long_rows_on_both_sides_of_the_feature_threshold(n: int, d: int) -> None:
    x = torch.randn(n, d, generator=generator(n + d))
    gram = cka_kernels.gram(x)
    assert torch.equal(gram, gram.T)
    assert_gram_close(gram, gram_linear_reference(x.double()), rtol=1e-6)


def test_gram_of_rows_that_are_views_and_a_user_s_float32_precision() -> None:
    x = torch.randn(200, 300, generator=generator(1))
    columns = x[:, ::3]  # not contiguous
    expected = cka_kernels.gram(columns.contiguous())
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # would allow bf16 products
    try:
        assert torch.equal(cka_kernels.gram(columns), expected)
        assert torch.get_float32_matmul_precision() == "medium"  # the user's, restored
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.skipif(not HAS_CONV_PRECISION, reason="torch.backends.mkldnn.conv.fp32_precision")
def test_gram_ignores_a_user_s_bf16_convolution_precision() -> None:
    x = torch.randn(MIN_ROWS * 2, 4096, generator=generator(2))
    expected = cka_kernels.gram(x)
    user_setting = torch.backends.mkldnn.conv.fp32_precision
    torch.backends.mkldnn.conv.fp32_precision = "bf16"
    try:
        assert torch.equal(cka_kernels.gram(x), expected)
        assert torch.backends.mkldnn.conv.fp32_precision == "bf16"  # the user's, restored
    finally:
        torch.backends.mkldnn.conv.fp32_precision = user_setting


# ---- CKA: features read in memory order, shifted through a scratch buffer ---------------


def test_rows_in_memory_order_read_channels_last_features_without_a_copy() -> None:
    x = torch.randn(6, 5, 4, 3, generator=generator(11))
    fast = x.contiguous(memory_format=torch.channels_last)
    rows = cka_kernels.rows_in_memory_order(fast)
    assert rows.shape == (6, 60) and rows.data_ptr() == fast.data_ptr()
    assert torch.equal(rows, x.permute(0, 2, 3, 1).reshape(6, -1))  # [n, H * W * C]
    # The Gram does not depend on the order of the columns.
    torch.testing.assert_close(rows @ rows.T, x.reshape(6, -1) @ x.reshape(6, -1).T)
    assert torch.equal(cka_kernels.rows_in_memory_order(x), x.reshape(6, -1))
    sliced = x[:, :, ::2]  # not dense: reshaped (copied) in the usual order
    assert torch.equal(cka_kernels.rows_in_memory_order(sliced), sliced.reshape(6, -1))
    matrix = torch.randn(6, 7)
    assert torch.equal(cka_kernels.rows_in_memory_order(matrix), matrix)


SHIFTED_SHAPES = [(32, 3, 4, 4), (8, 200), (MIN_ROWS, 16, 8, 8), (BLOCKED_ROWS, 8, 4, 4), (300, 45)]


def shifted_rows(x: torch.Tensor) -> torch.Tensor:
    """What ShiftedGram multiplies: rows in memory order minus their mean (float32 or 64),
    in a fresh contiguous tensor."""
    rows = cka_kernels.rows_in_memory_order(x)
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return (rows - rows.mean(dim=0, keepdim=True, dtype=dtype)).contiguous()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_shifted_gram_equals_its_reference(layout: str) -> None:
    gram_of = cka_kernels.ShiftedGram()
    for i, shape in enumerate(SHIFTED_SHAPES):  # the scratch buffer grows and shrinks
        x = torch.randn(*shape, generator=generator(i)) * 3 + 50  # a large mean
        if layout == "channels_last" and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        elif layout == "strided":
            x = x.transpose(0, 1).contiguous().transpose(0, 1)
        gram = gram_of(x)
        assert gram.dtype == torch.float32 and torch.equal(gram, gram.T)
        assert_gram_close(gram, shifted_gram_reference(x), rtol=1e-5)
        # The scratch buffer changes no bit: the kernel's product of the shifted rows.
        assert torch.equal(gram, cka_kernels.gram(shifted_rows(x)))
        exact = gram_of(x.double())  # float64 features stay float64
        assert exact.dtype == torch.float64
        assert_gram_close(exact, shifted_gram_reference(x.double()), rtol=1e-12)
        assert torch.equal(gram_of(x.bfloat16()), cka_kernels.gram(shifted_rows(x.bfloat16())))


def test_shifted_gram_in_and_out_of_inference_mode() -> None:
    gram_of = cka_kernels.ShiftedGram()
    x = torch.randn(MIN_ROWS, 20, generator=generator(3))
    with torch.inference_mode():
        inside = gram_of(x).clone()
    outside = gram_of(x)  # a buffer made in inference mode cannot be written here
    assert torch.equal(inside, outside)


def test_gram_stack_holds_each_batch_s_grams_in_float64() -> None:
    stack = cka_kernels.GramStack()
    for n, count in [(8, 3), (8, 3), (5, 3), (5, 2)]:
        grams = [torch.randn(n, n, generator=generator(n + k)) for k in range(count)]
        stacked = stack(grams)
        assert stacked.dtype == torch.float64
        assert torch.equal(stacked, torch.stack(grams).double())
    with torch.inference_mode():
        stack(grams)
    assert torch.equal(stack(grams), torch.stack(grams).double())


# ---- block and pixel shuffle --------------------------------------------------------------

ROW_BLOCK = shuffle_kernels.ROW_GATHER_MIN_BLOCK
COPY_BLOCK = shuffle_kernels.BLOCK_COPY_MIN_BLOCK
COPY_VALUES = shuffle_kernels.BLOCK_COPY_MIN_VALUES
# (n, c, h, w, b): values and rows gathered (b on both sides of ROW_BLOCK, square or not),
# blocks copied (b and N*C*b*b on both sides of COPY_BLOCK and COPY_VALUES).
SHUFFLE_CASES = [
    (3, 3, 8, 8, 1),
    (3, 3, 8, 8, 2),
    (3, 3, 8, 12, 4),
    (3, 3, 6, 9, 3),
    (3, 3, 14, 21, ROW_BLOCK - 1),
    (3, 3, 16, 24, ROW_BLOCK),
    (3, 3, 36, 24, 12),
    (COPY_VALUES // (3 * ROW_BLOCK**2) + 1, 3, 32, 32, ROW_BLOCK),
    (3, 3, 32, 32, COPY_BLOCK),
    (COPY_VALUES // (2 * COPY_BLOCK**2), 2, 32, 48, COPY_BLOCK),  # exactly the threshold
    (COPY_VALUES // (2 * COPY_BLOCK**2) - 1, 2, 32, 32, COPY_BLOCK),  # one image short
    (11, 2, 64, 64, 2 * COPY_BLOCK),
    (COPY_VALUES // (3 * COPY_BLOCK**2) + 1, 3, 32, 64, COPY_BLOCK),
]


@pytest.mark.parametrize(("n", "c", "h", "w", "b"), SHUFFLE_CASES)
def test_block_shuffle_kernels_equal_the_reference(n: int, c: int, h: int, w: int, b: int) -> None:
    x = torch.randn(n, c, h, w, generator=generator(n * h + b))
    reference = block_shuffle_reference(x, b, seed=3)
    assert torch.equal(shuffle_kernels.block_shuffle_into(x, b, 3), reference)
    assert torch.equal(block_shuffle(x, b, seed=3), reference)
    out = torch.full_like(x, float("nan"))
    assert shuffle_kernels.block_shuffle_into(x, b, 3, out=out) is out
    assert torch.equal(out, reference)
    strided = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    assert torch.equal(shuffle_kernels.block_shuffle_into(strided, b, 3), reference)
    last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(shuffle_kernels.block_shuffle_into(last, b, 3), reference)
    integers = (x * 40).to(torch.int16)
    assert torch.equal(
        shuffle_kernels.block_shuffle_into(integers, b, 3),
        block_shuffle_reference(integers, b, 3),
    )


@pytest.mark.parametrize("seed", [0, 1234, -5, 2**64 + 7])
def test_pixel_shuffle_kernel_equals_the_reference(seed: int) -> None:
    x = torch.randn(4, 3, 8, 6, generator=generator(5))
    reference = pixel_shuffle_reference(x, seed)
    assert torch.equal(shuffle_kernels.pixel_shuffle_gather(x, seed), reference)
    assert torch.equal(pixel_shuffle(x, seed), reference)
    last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(shuffle_kernels.pixel_shuffle_gather(last, seed), reference)


def test_the_device_index_cache_keeps_one_copy_per_device() -> None:
    cache = shuffle_kernels.DeviceIndexCache(max_entries=2)
    index = torch.arange(5)
    made = []

    def make() -> torch.Tensor:
        made.append(1)
        return index

    assert cache.on_device(("a",), make, torch.device("cpu")) is index  # CPU: as it is
    meta = torch.device("meta")
    first = cache.on_device(("a",), make, meta)
    assert first.device == meta and cache.on_device(("a",), make, meta) is first
    assert len(made) == 2  # the second call on meta is served from the cache
    for key in "bcd":  # beyond max_entries: emptied, then filled again
        cache.on_device((key,), make, meta)
    assert cache.on_device(("a",), make, meta) is not first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("n", "c", "h", "w", "b"), SHUFFLE_CASES)
def test_the_kernels_on_cuda_equal_the_reference(n: int, c: int, h: int, w: int, b: int) -> None:
    x = torch.randn(n, c, h, w, generator=generator(n * h + b))
    reference = block_shuffle_reference(x, b, seed=3)
    on_cuda = x.cuda()
    assert torch.equal(shuffle_kernels.block_shuffle_into(on_cuda, b, 3).cpu(), reference)
    out = torch.empty_like(on_cuda)
    shuffle_kernels.block_shuffle_into(on_cuda, b, 3, out=out)
    assert torch.equal(out.cpu(), reference)
    assert torch.equal(pixel_shuffle(on_cuda, 3).cpu(), pixel_shuffle_reference(x, 3))
    gram = cka_kernels.gram(on_cuda.flatten(1))
    assert torch.equal(gram, gram.T)
    assert_gram_close(gram.cpu(), gram_linear_reference(x.flatten(1).double()), rtol=1e-5)
