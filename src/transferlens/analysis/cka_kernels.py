"""Fast kernels for the CKA estimators: the numbers of :mod:`.cka_estimators`, in less time.

Each kernel here computes a formula of :mod:`.cka_estimators` and is tested equal to
its plain reference there (``tests/test_kernels.py``):

* :func:`gram` -- ``X X^T`` (reference ``gram_linear_reference``), exactly symmetric,
  by the fastest of three products for the shape, device and dtype.
* :class:`ShiftedGram` -- the Gram of features minus their batch mean (reference
  ``shifted_gram_reference``), read in memory order through one reused scratch buffer.
* :class:`GramStack` -- a batch's Grams copied into one reused float64 ``[T, n, n]``
  tensor, for the in-place U-centring of :class:`.cka_estimators.MinibatchCKA`.
* :func:`upper_triangle` -- the strict upper triangles of ``[T, n, n]`` matrices, kept
  (float32) for the permutation null.

The thresholds below were measured; their timings are in ``benchmarks/README.md``
("Why these thresholds").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

# Below twice this many rows, splitting a Gram into blocks costs more than it saves.
SYMMETRIC_GRAM_MIN_ROWS = 64
# oneDNN's product beats MKL's (PyTorch's CPU matmul) only for at least this many rows...
ONEDNN_MIN_ROWS = 64
# ...and at most this many features: longer rows are MKL's.
ONEDNN_MAX_FEATURES = 32_768


@contextlib.contextmanager
def _ieee_float32_products() -> Iterator[None]:
    """Float32 products in full precision (no TF32 or bf16), whatever the user set:
    matmuls, and oneDNN convolutions where torch has that switch (PyTorch >= 2.9)."""
    previous = torch.get_float32_matmul_precision()
    conv = getattr(getattr(torch.backends.mkldnn, "conv", None), "fp32_precision", None)
    torch.set_float32_matmul_precision("highest")
    if conv is not None:
        torch.backends.mkldnn.conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
        if conv is not None:
            torch.backends.mkldnn.conv.fp32_precision = conv


def _mirror_upper(gram: Tensor) -> Tensor:
    """The upper triangle of ``gram`` copied onto the lower: one rounding for (i, j) and (j, i)."""
    return gram.triu() + gram.triu(1).T


def _onednn_applies(x: Tensor) -> bool:
    n, d = x.shape
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.enabled
        and n >= ONEDNN_MIN_ROWS
        and d <= ONEDNN_MAX_FEATURES
    )


def _onednn_gram(x: Tensor) -> Tensor:
    """``X X^T`` of a float32 CPU matrix as a oneDNN 1x1 convolution, made exactly symmetric.

    PyTorch's CPU matmul calls MKL, which runs this shape (few rows, long rows) at about
    half the speed of oneDNN's kernels on AMD CPUs. The convolution is the same product:
    weights ``X`` as ``[n, d, 1, 1]``, input ``X^T`` as a ``[1, d, n, 1]`` channels-last
    view of ``X`` (no copy). Its (i, j) and (j, i) entries usually come out equal, but
    nothing guarantees it: it is checked, and mirrored when they differ (on a CPU the
    check costs half as much as mirroring).
    """
    n, d = x.shape
    x = x.contiguous()
    columns = x.view(1, n, 1, d).permute(0, 3, 1, 2)
    gram = torch.nn.functional.conv2d(columns, x.view(n, d, 1, 1)).view(n, n)
    return gram if torch.equal(gram, gram.T) else _mirror_upper(gram)


def _blocked_gram(x: Tensor) -> Tensor:
    """``X X^T`` from its upper block triangle, recursively; exactly symmetric.

    With ``X`` split into rows ``[X1; X2]``, ``K = [[K1, X1 X2^T], [(X1 X2^T)^T, K2]]``,
    the diagonal blocks ``K1``, ``K2`` made the same way: at 256 rows, 5/8 of the
    ``n^2 d`` multiply-adds of one product. Small matrices are one product, mirrored.
    """
    n = x.shape[0]
    if n < 2 * SYMMETRIC_GRAM_MIN_ROWS:
        return _mirror_upper(x @ x.T)
    half = n // 2
    gram = x.new_empty((n, n))
    gram[:half, :half] = _blocked_gram(x[:half])
    gram[:half, half:] = x[:half] @ x[half:].T
    gram[half:, :half] = gram[:half, half:].T
    gram[half:, half:] = _blocked_gram(x[half:])
    return gram


def gram(x: Tensor) -> Tensor:
    """``K = X X^T`` of an ``[n, d]`` matrix: exactly symmetric, float32 in full precision.

    Equal to ``x @ x.T`` up to rounding (the paths sum in different orders). On the CPU
    in float32 for the shapes where oneDNN is faster (at least ``ONEDNN_MIN_ROWS`` rows,
    at most ``ONEDNN_MAX_FEATURES`` features), one oneDNN product; everywhere else the
    upper block triangle only (:func:`_blocked_gram`).
    """
    with _ieee_float32_products():
        if _onednn_applies(x):
            return _onednn_gram(x)
        return _blocked_gram(x)


def rows_in_memory_order(x: Tensor) -> Tensor:
    """``x`` ``[n, ...]`` as an ``[n, d]`` matrix whose columns are in memory order.

    A Gram ``X X^T`` does not depend on the order of the columns, so a channels-last
    ``[n, C, H, W]`` tensor is read as ``[n, H * W * C]`` without a copy (``reshape``
    would copy it into ``C, H, W`` order). Other layouts are reshaped as usual.
    """
    if x.ndim <= 2:
        return x.reshape(x.shape[0], -1)
    # The feature dims ordered by decreasing stride: for a dense tensor, a contiguous view.
    order = sorted(range(1, x.ndim), key=lambda dim: -x.stride(dim))
    permuted = x.permute(0, *order)
    if permuted.is_contiguous():
        return permuted.view(x.shape[0], -1)
    return x.reshape(x.shape[0], -1)


class ScratchBuffers:
    """One growable flat buffer per (device, dtype, inference mode), viewed to the shape asked.

    Keyed by inference mode too: a tensor made in it cannot be written outside it.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple, Tensor] = {}

    def __len__(self) -> int:
        return len(self._buffers)

    def get(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
        """An uninitialised ``[rows, columns]`` tensor; its memory is reused by the next call."""
        key = (device, dtype, torch.is_inference_mode_enabled())
        size = shape[0] * shape[1]
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[key] = torch.empty(size, dtype=dtype, device=device)
        return buffer[:size].view(shape)


class ShiftedGram:
    """``K = (X - 1 m^T)(X - 1 m^T)^T`` of ``[n, ...]`` features ``X``, ``m`` their batch mean.

    Reference: ``cka_estimators.shifted_gram_reference`` (here float32 unless the
    features are float64). The shift (CKA is invariant to it) makes the float32 Gram
    a product of values of the size of the signal, not of a large post-ReLU mean. The
    features are read in memory order (:func:`rows_in_memory_order`) and the shifted
    rows go through one scratch buffer reused for every call, so that as a forward
    hook's reduction (``stream_features(reduce=ShiftedGram())``) each layer's output
    becomes its Gram as it is produced and no batch of features is held.

    Features that are the same for every example of the batch (a ViT's class token
    before the first block) give exactly the zero matrix: their mean, summed in
    floating point, differs from them by a rounding error, whose Gram would otherwise
    make a constant look like a signal (CKA 1 with itself, where it is undefined).
    """

    def __init__(self) -> None:
        self._scratch = ScratchBuffers()

    def __call__(self, features: Tensor) -> Tensor:
        rows = rows_in_memory_order(features.detach())
        dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
        shifted = self._scratch.get(rows.shape, dtype, rows.device)
        torch.sub(rows, rows.mean(dim=0, keepdim=True, dtype=dtype), out=shifted)
        _zero_if_constant(rows, shifted)
        return gram(shifted)


def _zero_if_constant(rows: Tensor, shifted: Tensor) -> None:
    """Zero ``shifted`` when every row of ``rows`` is the same (see :class:`ShiftedGram`)."""
    if rows.shape[0] < 2:
        return  # one row minus its own mean is exactly zero
    if rows.device.type == "cpu":
        # Real features differ in the first two rows already: the whole check is rare.
        if torch.equal(rows[1], rows[0]) and torch.equal(rows, rows[:1].expand_as(rows)):
            shifted.zero_()
    else:  # decided on the device: no wait for the host in the middle of a forward
        shifted.masked_fill_((rows == rows[:1]).all(), 0.0)


class GramStack:
    """A batch's ``T`` Grams ``[n, n]`` copied into one float64 ``[T, n, n]`` tensor.

    The tensor is reused while ``T``, ``n`` and the device stay the same (on a CPU,
    fresh memory for the stack costs more than centring it). It sits on the first
    Gram's device: models compared may sit on different ones, and the Grams are small.
    """

    def __init__(self) -> None:
        self._buffer: Tensor | None = None

    def __call__(self, grams: Sequence[Tensor]) -> Tensor:
        n, device = grams[0].shape[0], grams[0].device
        buffer = self._buffer
        if (
            buffer is None
            or buffer.shape[:2] != (len(grams), n)
            or buffer.device != device
            or (buffer.is_inference() and not torch.is_inference_mode_enabled())
        ):
            buffer = torch.empty(len(grams), n, n, dtype=torch.float64, device=device)
            self._buffer = buffer
        for row, matrix in zip(buffer, grams, strict=True):
            row.copy_(matrix)
        return buffer


_UPPER_INDEX: dict[tuple[int, torch.device], Tensor] = {}


def upper_flat_index(n: int, device: torch.device | str = "cpu") -> Tensor:
    """Flat positions ``i * n + j`` of the strict upper triangle ``i < j`` of an ``n x n``
    matrix, row by row (cached per size and device)."""
    key = (n, torch.device(device))
    if key not in _UPPER_INDEX:
        rows, cols = torch.triu_indices(n, n, 1, device=device)
        _UPPER_INDEX[key] = rows * n + cols
    return _UPPER_INDEX[key]


def upper_triangle(matrices: Tensor) -> Tensor:
    """``[T, n, n]`` -> ``[T, n (n - 1) / 2]`` float32: each matrix's entries above the
    diagonal, row by row (a copy, on the matrices' device)."""
    count, n = matrices.shape[0], matrices.shape[-1]
    flat = matrices.reshape(count, n * n)
    return flat.index_select(1, upper_flat_index(n, matrices.device)).to(torch.float32)
