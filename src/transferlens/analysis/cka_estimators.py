"""Centered kernel alignment (Kornblith et al., 2019), full-data and streaming.

Notation: ``X`` is an ``[n, d]`` matrix of features (one row per example), ``K`` and
``L`` are ``n x n`` Gram matrices, ``H = I - 11^T / n`` is the centring matrix.

* Biased HSIC (Gretton et al. 2005): ``HSIC_0(K, L) = tr(K H L H) / (n - 1)^2``.
* Unbiased HSIC (Song et al. 2012), for ``n >= 4``, with ``~K`` = ``K`` with its
  diagonal set to zero::

      HSIC_1(K, L) = [ tr(~K ~L) + (1^T ~K 1)(1^T ~L 1) / ((n-1)(n-2))
                       - 2 / (n-2) * 1^T ~K ~L 1 ] / (n (n-3))

  which equals ``<U(K), U(L)> / (n (n-3))`` with ``U`` the U-centring of Szekely &
  Rizzo (2014): ``U(K)_ij = ~K_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))`` off the
  diagonal and 0 on it (``r`` = row sums of ``~K``, ``s`` = its total). This inner
  product form is what the code uses: one matrix product gives every pair of layers.
* ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``; "debiased" CKA uses
  ``HSIC_1``. CKA is NaN (undefined) when a representation is constant.

Both estimators are invariant to translating the features (``X -> X - 1 c^T``): the
linear Gram then changes by ``a 1^T + 1 a^T + b 11^T``, which ``H . H`` and ``U`` both
annihilate. The streaming estimator exploits this for float32 accuracy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from transferlens.errors import UserInputError

MIN_BATCH_EXAMPLES = 4  # HSIC_1 divides by n (n - 3) and (n - 1)(n - 2)


def _as_matrix(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """``[n, ...]`` features as a float64 ``[n, d]`` tensor (trailing dims flattened)."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim < 2:
        raise UserInputError(
            f"{name} must be an [n, d] matrix of features (got shape {tuple(x.shape)})"
        )
    return x.detach().reshape(x.shape[0], -1).to(torch.float64)


# Below this many rows a Gram is one product: splitting small ones costs more than it saves.
SYMMETRIC_GRAM_MIN_ROWS = 64


# oneDNN's product wins for these shapes only (measured on the 2-core EPYC, n = 256:
# d = 4,096 1.4 vs 2.5 ms, d = 25,088 10.6 vs 16.2 ms, d = 100,352 67 vs 64 ms; n = 64,
# d = 802,816 82 vs 44 ms; n = 32, d = 4,096 0.08 vs 0.05 ms): beyond them, MKL.
ONEDNN_MIN_ROWS = 64
ONEDNN_MAX_FEATURES = 32_768


def _onednn_applies(x: torch.Tensor) -> bool:
    n, d = x.shape
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.enabled
        and n >= ONEDNN_MIN_ROWS
        and d <= ONEDNN_MAX_FEATURES
    )


def _onednn_gram(x: torch.Tensor) -> torch.Tensor:
    """``X X^T`` of a float32 CPU matrix through oneDNN (exact symmetry not guaranteed).

    PyTorch's CPU matmul calls MKL, which runs this shape (few rows, long rows) at
    about half the speed of oneDNN's kernels on AMD CPUs (measured: 208 vs 405 GFLOP/s
    for ``[256, 4096]`` on this project's 2-core EPYC machine). A 1x1 convolution is
    the same product in oneDNN: weights ``X`` as ``[n, d, 1, 1]``, input ``X^T`` as a
    ``[1, d, n, 1]`` channels-last view of ``X`` (no copy).
    """
    n, d = x.shape
    x = x.contiguous()
    columns = x.view(1, n, 1, d).permute(0, 3, 1, 2)
    return torch.nn.functional.conv2d(columns, x.view(n, d, 1, 1)).view(n, n)


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """Linear-kernel Gram matrix ``K = X X^T``, exactly symmetric.

    On the CPU in float32, for the shapes where it is faster (``_onednn_applies``), it
    is one oneDNN product (:func:`_onednn_gram`), its upper triangle mirrored if it is
    not exactly symmetric already.
    Elsewhere only the upper block triangle is multiplied:
    with ``X`` split into rows ``[X1; X2]``, ``K = [[K1, X1 X2^T], [(X1 X2^T)^T, K2]]``
    with the diagonal blocks ``K1``, ``K2`` recursively the same way: at 256 rows, 5/8
    of the ``n^2 d`` multiply-adds of ``X X^T``.
    """
    n = x.shape[0]
    onednn = _onednn_applies(x)
    if onednn or n < 2 * SYMMETRIC_GRAM_MIN_ROWS:
        gram = _onednn_gram(x) if onednn else x @ x.T
        # oneDNN's products come out exactly symmetric (its order of summation does not
        # depend on the entry); on a CPU checking is half the cost of mirroring (on a
        # GPU the check would wait for the device).
        if onednn and torch.equal(gram, gram.T):
            return gram
        return gram.triu() + gram.triu(1).T  # one rounding for both (i, j) and (j, i)
    half = n // 2
    gram = x.new_empty((n, n))
    gram[:half, :half] = gram_linear(x[:half])
    gram[:half, half:] = x[:half] @ x[half:].T
    gram[half:, :half] = gram[:half, half:].T
    gram[half:, half:] = gram_linear(x[half:])
    return gram


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """``D2_ij = |x_i - x_j|^2``, clamped at 0 against rounding."""
    sq_norms = (x * x).sum(dim=1)
    return (sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T)).clamp_min_(0.0)


def median_bandwidth(sq_dist: torch.Tensor, median_fraction: float = 1.0) -> float:
    """Kornblith et al.'s rule: ``sigma = fraction * sqrt(median(D2))``.

    The median is over all ``n^2`` entries of the squared-distance matrix, its zero
    diagonal included (numpy's median: the mean of the two middle values when even).
    """
    median = float(np.median(sq_dist.cpu().numpy()))
    if median <= 0.0:
        raise UserInputError("rbf_cka: the median pairwise distance is 0; pass sigma explicitly")
    return median_fraction * median**0.5


def gram_rbf(
    x: torch.Tensor, sigma: float | None = None, median_fraction: float = 1.0
) -> torch.Tensor:
    """RBF Gram matrix ``K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))``; see :func:`median_bandwidth`."""
    sq_dist = squared_distances(x)
    if sigma is None:
        sigma = median_bandwidth(sq_dist, median_fraction)
    if not sigma > 0:
        raise UserInputError(f"rbf_cka: sigma must be positive (got {sigma!r})")
    return torch.exp(-sq_dist / (2.0 * sigma**2))


def center_gram(gram: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """``H K H`` (biased) or the U-centring ``U(K)`` (unbiased); see the module docstring.

    ``gram`` is ``[n, n]`` or a stack ``[..., n, n]`` (each matrix centred on its own).
    """
    gram = gram.clone()
    if unbiased:
        return _u_center_(gram)
    gram -= gram.mean(dim=-2, keepdim=True)
    gram -= gram.mean(dim=-1, keepdim=True)
    return gram


def _u_center_(gram: torch.Tensor) -> torch.Tensor:
    """U-centre the symmetric ``gram`` ``[..., n, n]`` in place (no temporary of its size)."""
    n = gram.shape[-1]
    gram.diagonal(dim1=-2, dim2=-1).zero_()
    row_sums = gram.sum(dim=-1, keepdim=True)  # [..., n, 1]; ~K is symmetric
    total = row_sums.sum(dim=-2, keepdim=True)  # [..., 1, 1]
    gram -= row_sums / (n - 2)
    gram -= row_sums.transpose(-2, -1) / (n - 2)
    gram += total / ((n - 1) * (n - 2))
    gram.diagonal(dim1=-2, dim2=-1).zero_()
    return gram


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> float:
    """CKA of two Gram matrices; the HSIC normalisations cancel in the ratio."""
    n = gram_x.shape[0]
    if gram_y.shape != gram_x.shape:
        raise UserInputError(f"CKA needs the same examples in both: {n} vs {gram_y.shape[0]} rows")
    needed = MIN_BATCH_EXAMPLES if debiased else 2
    if n < needed:
        raise UserInputError(f"{'debiased ' if debiased else ''}CKA needs n >= {needed} (got {n})")
    centered_x = center_gram(gram_x, unbiased=debiased)
    centered_y = center_gram(gram_y, unbiased=debiased)
    xy = (centered_x * centered_y).sum()
    xx = (centered_x * centered_x).sum()
    yy = (centered_y * centered_y).sum()
    return float(xy / torch.sqrt(xx * yy))


def _paired(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise UserInputError(
            f"CKA needs the same examples in x and y: {x.shape[0]} vs {y.shape[0]} rows"
        )
    return x, y


def linear_cka(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, debiased: bool = False
) -> float:
    """Linear CKA of ``[n, dx]`` and ``[n, dy]`` features, in float64.

    ``K = X X^T``, ``L = Y Y^T``; ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with
    ``HSIC_0`` (default, Kornblith et al. 2019) or ``HSIC_1`` (``debiased=True``, n >= 4).
    Features are mean-centred first, which changes neither estimator (exact invariance).
    """
    x, y = _paired(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    return cka_from_grams(gram_linear(x), gram_linear(y), debiased)


def rbf_cka(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    sigma: float | None = None,
    debiased: bool = False,
    median_fraction: float = 1.0,
) -> float:
    """RBF-kernel CKA, in float64: ``K_ij = exp(-|x_i - x_j|^2 / (2 sigma^2))``.

    ``sigma=None``: each representation gets its own bandwidth
    ``sigma = median_fraction * sqrt(median of its n x n squared distances)`` (Kornblith
    et al.'s reference rule, diagonal included); a given ``sigma`` is used for both.
    """
    x, y = _paired(x, y)
    return cka_from_grams(
        gram_rbf(x, sigma, median_fraction), gram_rbf(y, sigma, median_fraction), debiased
    )


def cka_from_hsic(hsic: np.ndarray) -> np.ndarray:
    """``CKA_ij = HSIC_ij / sqrt(HSIC_ii HSIC_jj)`` for ``[..., T, T]`` HSIC matrices (NaN if 0/0)."""
    hsic = np.asarray(hsic, dtype=np.float64)
    diagonal = np.diagonal(hsic, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return hsic / np.sqrt(diagonal[..., :, None] * diagonal[..., None, :])


@contextlib.contextmanager
def _ieee_float32_matmul() -> Iterator[None]:
    """Keep float32 products in full precision (no TF32 or bf16) for the Gram products:
    matmuls, and oneDNN convolutions (:func:`_onednn_gram`) where torch has the switch."""
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


def rows_in_memory_order(x: torch.Tensor) -> torch.Tensor:
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


class ShiftedGram:
    """``K = (X - 1 m^T)(X - 1 m^T)^T`` of ``[n, ...]`` features ``X``, ``m`` their batch mean.

    Precision without float64 features: the shift (allowed, see the module docstring)
    lets the float32 Gram be computed from values of the size of the signal, not of a
    large post-ReLU mean; the U-centring (:func:`u_center_stack`) then runs in float64.
    Float64 features stay float64, others become float32. The shifted rows go through
    one scratch buffer, reused for every call: used as a forward hook's reduction
    (:func:`~transferlens.analysis.features.stream_features` ``reduce=``), each layer's
    output becomes its Gram as it is produced and no batch of features is held. (On a
    CPU, holding them costs fresh memory every batch: +12% on the forwards of two
    ResNet-18s, more than their Grams' products.)
    """

    def __init__(self) -> None:
        self._scratch: dict[tuple, torch.Tensor] = {}

    def _buffer(self, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # Keyed by inference mode too: a tensor made in it cannot be written outside it.
        key = (device, dtype, torch.is_inference_mode_enabled())
        size = shape[0] * shape[1]
        buffer = self._scratch.get(key)
        if buffer is None or buffer.numel() < size:
            buffer = self._scratch[key] = torch.empty(size, dtype=dtype, device=device)
        return buffer[:size].view(shape)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        rows = rows_in_memory_order(features.detach())
        dtype = torch.float64 if rows.dtype == torch.float64 else torch.float32
        shifted = self._buffer(rows.shape, dtype, rows.device)
        torch.sub(rows, rows.mean(dim=0, keepdim=True, dtype=dtype), out=shifted)
        with _ieee_float32_matmul():
            return gram_linear(shifted)


def u_center_stack(grams: Sequence[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """``[T, n*n]`` float64 rows: the U-centring of each ``n x n`` Gram, on the first's device.

    ``out``: a float64 ``[T, n, n]`` buffer there to centre in, reused across batches
    (on a CPU, fresh memory for the stack costs more than the centring itself).
    """
    # Models compared may sit on different devices; the n x n Grams are cheap to move.
    # One U-centring of the whole float64 stack: a few large ops, not a few per layer.
    n = grams[0].shape[0]
    if out is None:
        out = torch.empty(len(grams), n, n, dtype=torch.float64, device=grams[0].device)
    for row, gram in zip(out, grams, strict=True):
        row.copy_(gram)
    return _u_center_(out).view(len(grams), -1)


class MinibatchCKA:
    """Streaming linear CKA of Nguyen, Raghu & Kornblith (2021), every layer pair at once.

    For each batch ``b`` (``n_b >= 4`` examples) and layers ``i, j`` (the ``La`` layers
    of ``a`` followed by the ``Lb`` of ``b``), ``HSIC_1(K_i^b, K_j^b)`` is added to a
    float64 ``[T, T]`` sum (``T = La + Lb``), all pairs from one product of the stacked
    U-centred Grams. Then ``CKA_ij = S_ij / sqrt(S_ii S_jj)``: :meth:`compute` returns
    the ``[La, Lb]`` block (``[La, La]`` when ``n_layers_b`` is None: every pair of ``a``).

    Small batches: a batch of fewer than 4 examples is skipped (HSIC_1 is undefined
    there) and counted in ``skipped_examples`` / ``skipped_batches``; it never adds NaN.
    The state is sums, so :meth:`sync` all-reduces it across processes (torch.distributed).
    With ``keep_batch_terms=True`` each batch's ``[T, T]`` HSIC is also kept
    (:meth:`batch_hsic`), for bootstrapping over batches.
    """

    def __init__(
        self, n_layers_a: int, n_layers_b: int | None = None, *, keep_batch_terms: bool = False
    ) -> None:
        if n_layers_a < 1 or (n_layers_b is not None and n_layers_b < 1):
            raise UserInputError(
                f"MinibatchCKA needs at least one layer per side (got {n_layers_a}, {n_layers_b})"
            )
        self.n_layers_a = n_layers_a
        self.n_layers_b = n_layers_b
        self.keep_batch_terms = keep_batch_terms
        self.reset()

    @property
    def n_layers(self) -> int:
        return self.n_layers_a + (self.n_layers_b or 0)

    def reset(self) -> None:
        self.hsic_sum: torch.Tensor | None = None
        self.n_batches = 0
        self.n_examples = 0
        self.skipped_batches = 0
        self.skipped_examples = 0
        self._batch_terms: list[torch.Tensor] = []
        self._stack_buffer: torch.Tensor | None = None
        self._gram_of = ShiftedGram()
        self._synced = False

    def update(
        self, features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor] | None = None
    ) -> None:
        """Add one batch: ``La`` (and ``Lb``) tensors ``[n, ...]`` of the same ``n`` examples."""
        features = self._batch(features_a, features_b, "feature tensors")
        if features is not None:
            grams = [self._gram_of(tensor) for tensor in features]
            n, device = features[0].shape[0], features[0].device
            self._add(u_center_stack(grams, self._stack(n, device)), n)

    def update_grams(
        self, grams_a: Sequence[torch.Tensor], grams_b: Sequence[torch.Tensor] | None = None
    ) -> None:
        """Add one batch given the linear Grams ``[n, n]`` of its features (:class:`ShiftedGram`).

        The same as :meth:`update` on the features: the Grams of features translated
        by any constant row give the same HSIC_1.
        """
        grams = self._batch(grams_a, grams_b, "Gram matrices")
        if grams is None:
            return
        n = grams[0].shape[0]
        if any(gram.shape != (n, n) for gram in grams):
            raise ValueError(
                f"Gram matrices must be [n, n] (got {[tuple(g.shape) for g in grams]})"
            )
        self._add(u_center_stack(grams, self._stack(n, grams[0].device)), n)

    def _stack(self, n: int, device: torch.device) -> torch.Tensor:
        """The float64 ``[T, n, n]`` buffer the batch's Grams are centred in (reused)."""
        buffer = self._stack_buffer
        if (
            buffer is None
            or buffer.shape[1] != n
            or buffer.device != device
            or (buffer.is_inference() and not torch.is_inference_mode_enabled())
        ):
            buffer = torch.empty(self.n_layers, n, n, dtype=torch.float64, device=device)
            self._stack_buffer = buffer
        return buffer

    def _batch(
        self, part_a: Sequence[torch.Tensor], part_b: Sequence[torch.Tensor] | None, what: str
    ) -> list[torch.Tensor] | None:
        """The batch's tensors, checked; None (and counted) when it is too small to use."""
        if self._synced:
            raise RuntimeError("MinibatchCKA.update after sync(); call reset() to start again")
        tensors = list(part_a) + (list(part_b) if part_b is not None else [])
        if (part_b is None) != (self.n_layers_b is None) or len(tensors) != self.n_layers:
            raise ValueError(
                f"expected {self.n_layers_a} + {self.n_layers_b or 0} {what}, got {len(tensors)}"
            )
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(
                f"every one of the {what} must have the same batch size "
                f"(got {[t.shape[0] for t in tensors]})"
            )
        if n < MIN_BATCH_EXAMPLES:
            self.skipped_batches += 1
            self.skipped_examples += n
            return None
        return tensors

    def _add(self, stacked: torch.Tensor, n: int) -> None:
        """Add the HSIC_1 of every pair of rows of the U-centred ``stacked`` ``[T, n*n]``."""
        hsic = (stacked @ stacked.T) / (n * (n - 3))
        self.hsic_sum = hsic.clone() if self.hsic_sum is None else self.hsic_sum + hsic
        self.n_batches += 1
        self.n_examples += n
        if self.keep_batch_terms:
            self._batch_terms.append(hsic)

    def _block(self, matrix: torch.Tensor) -> torch.Tensor:
        if self.n_layers_b is None:
            return matrix
        return matrix[..., : self.n_layers_a, self.n_layers_a :]

    def compute(self) -> torch.Tensor:
        """float64 CKA matrix ``[La, Lb]`` (``[La, La]`` for one side) over all batches so far."""
        if self.hsic_sum is None:
            raise UserInputError(
                f"MinibatchCKA: no batch had at least {MIN_BATCH_EXAMPLES} examples "
                f"({self.skipped_examples} examples skipped)"
            )
        return self._block(torch.from_numpy(cka_from_hsic(self.hsic_sum.cpu().numpy())))

    def batch_hsic(self) -> torch.Tensor:
        """``[B, T, T]`` per-batch HSIC_1 matrices (CPU float64); needs ``keep_batch_terms``."""
        if not self.keep_batch_terms:
            raise RuntimeError("MinibatchCKA(keep_batch_terms=False) keeps no per-batch terms")
        size = self.n_layers
        if not self._batch_terms:
            return torch.zeros(0, size, size, dtype=torch.float64)
        stacked = torch.cat([terms.reshape(-1, size, size).cpu() for terms in self._batch_terms])
        self._batch_terms = [stacked]
        return stacked

    def sync(self, process_group=None) -> None:
        """All-reduce the sums (and gather per-batch terms) when torch.distributed is initialised.

        Every process must call it; afterwards each holds the global state. A no-op
        in a single process. Call it once, after the last update.
        """
        distributed = torch.distributed
        if not (distributed.is_available() and distributed.is_initialized()):
            return
        if self._synced:
            raise RuntimeError("MinibatchCKA.sync() called twice")
        if self.hsic_sum is not None:
            device = self.hsic_sum.device
        elif distributed.get_backend(process_group) == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = torch.device("cpu")
        hsic = (
            self.hsic_sum
            if self.hsic_sum is not None
            else torch.zeros(self.n_layers, self.n_layers, dtype=torch.float64, device=device)
        )
        counts = torch.tensor(
            [self.n_batches, self.n_examples, self.skipped_batches, self.skipped_examples],
            dtype=torch.int64,
            device=device,
        )
        distributed.all_reduce(hsic, group=process_group)
        distributed.all_reduce(counts, group=process_group)
        self.n_batches, self.n_examples, self.skipped_batches, self.skipped_examples = (
            int(c) for c in counts
        )
        self.hsic_sum = hsic if self.n_batches else None
        if self.keep_batch_terms:
            gathered: list = [None] * distributed.get_world_size(process_group)
            distributed.all_gather_object(gathered, self.batch_hsic(), group=process_group)
            self._batch_terms = [torch.cat(gathered)]
        self._synced = True
