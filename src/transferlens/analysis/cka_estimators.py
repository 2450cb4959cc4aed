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

Scale: CKA is invariant to ``X -> c X Q`` (``c != 0``, ``Q`` orthogonal), and the code
keeps it so at any scale: no absolute epsilon anywhere (a constant representation is
detected exactly, by equal values, and gives NaN, never a guard such as ``+ 1e-12`` in a
denominator, which would bias CKA towards 0 for features of small scale).

Both estimators are invariant to translating the features (``X -> X - 1 c^T``): the
linear Gram then changes by ``a 1^T + 1 a^T + b 11^T``, which ``H . H`` and ``U`` both
annihilate. The streaming estimator exploits this for float32 accuracy.

Each formula here is written as in the papers (``*_reference`` where the code that runs
is a faster kernel); the kernels (Gram products, scratch memory) are in
:mod:`.cka_kernels`, tested equal to these references.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from transferlens.analysis import cka_kernels
from transferlens.analysis.cka_kernels import ShiftedGram
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


def gram_linear_reference(x: torch.Tensor) -> torch.Tensor:
    """Linear-kernel Gram matrix ``K = X X^T``, as written (the reference of :func:`gram_linear`)."""
    return x @ x.T


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """``K = X X^T``, exactly symmetric; :func:`gram_linear_reference` up to rounding.

    Computed by the fastest product for the shape (:func:`.cka_kernels.gram`).
    """
    return cka_kernels.gram(x)


def shifted_gram_reference(x: torch.Tensor) -> torch.Tensor:
    """``K = (X - 1 m^T)(X - 1 m^T)^T`` of ``[n, ...]`` features, ``m`` their mean, in float64.

    The linear Gram of the features translated by their batch mean: the same CKA
    (see the module docstring). Reference of :class:`.cka_kernels.ShiftedGram`.
    """
    rows = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    return gram_linear_reference(rows - rows.mean(dim=0, keepdim=True))


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
        return u_center_(gram)
    gram -= gram.mean(dim=-2, keepdim=True)
    gram -= gram.mean(dim=-1, keepdim=True)
    return gram


def u_center_(gram: torch.Tensor) -> torch.Tensor:
    """U-centre the symmetric ``gram`` ``[..., n, n]`` in place (no temporary of its size).

    ``U(K)_ij = ~K_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))`` off the diagonal and 0
    on it, with ``~K`` = ``K`` with a zero diagonal, ``r`` its row sums, ``s`` its total.
    """
    n = gram.shape[-1]
    gram.diagonal(dim1=-2, dim2=-1).zero_()
    row_sums = gram.sum(dim=-1, keepdim=True)  # [..., n, 1]; ~K is symmetric
    total = row_sums.sum(dim=-2, keepdim=True)  # [..., 1, 1]
    gram -= row_sums / (n - 2)
    gram -= row_sums.transpose(-2, -1) / (n - 2)
    gram += total / ((n - 1) * (n - 2))
    gram.diagonal(dim1=-2, dim2=-1).zero_()
    return gram


def hsic(gram_x: torch.Tensor, gram_y: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """``HSIC_0(K, L) = tr(K H L H) / (n-1)^2`` or ``HSIC_1(K, L) = <U(K), U(L)> / (n (n-3))``.

    The estimators of the module docstring, for two ``[n, n]`` Gram matrices
    (``n >= 4`` for ``unbiased``); :class:`MinibatchCKA` sums ``HSIC_1`` over batches.
    """
    n = gram_x.shape[-1]
    inner = (center_gram(gram_x, unbiased) * center_gram(gram_y, unbiased)).sum()
    return inner / (n * (n - 3)) if unbiased else inner / (n - 1) ** 2


def _is_constant(gram: torch.Tensor) -> bool:
    """Every entry equal (the zero Gram included): a kernel that tells no two examples
    apart, whose centred matrix is 0 in exact arithmetic (a test on values: no scale)."""
    return bool(torch.equal(gram, gram.reshape(-1)[:1].reshape(1, 1).expand_as(gram)))


def cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor, debiased: bool = False) -> float:
    """CKA of two Gram matrices; the HSIC normalisations cancel in the ratio.

    NaN when either Gram is constant (a representation without variance: CKA is 0/0
    there; centring would leave rounding noise, not 0). ``sqrt(xx) sqrt(yy)``: no
    product that could under- or overflow at extreme scales.
    """
    n = gram_x.shape[0]
    if gram_y.shape != gram_x.shape:
        raise UserInputError(f"CKA needs the same examples in both: {n} vs {gram_y.shape[0]} rows")
    needed = MIN_BATCH_EXAMPLES if debiased else 2
    if n < needed:
        raise UserInputError(f"{'debiased ' if debiased else ''}CKA needs n >= {needed} (got {n})")
    if _is_constant(gram_x) or _is_constant(gram_y):
        return math.nan
    centered_x = center_gram(gram_x, unbiased=debiased)
    centered_y = center_gram(gram_y, unbiased=debiased)
    xy = (centered_x * centered_y).sum()
    xx = (centered_x * centered_x).sum()
    yy = (centered_y * centered_y).sum()
    return float(xy / (torch.sqrt(xx) * torch.sqrt(yy)))


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
    Features are mean-centred first, which changes neither estimator (exact invariance);
    a column that is the same in every row becomes exactly 0 (its mean, summed in
    floating point, would leave a rounding residue), so constant features give NaN.
    """
    x, y = _paired(x, y)
    return cka_from_grams(gram_linear(_centred(x)), gram_linear(_centred(y)), debiased)


def _centred(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its column means, exactly-constant columns exactly 0."""
    centred = x - x.mean(dim=0)
    centred[:, (x == x[:1]).all(dim=0)] = 0.0
    return centred


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
    (:meth:`batch_hsic`), for bootstrapping over batches; with ``keep_grams=True`` each
    batch's U-centred Grams (their strict upper triangles, float32, on the Grams' device:
    :meth:`batch_grams`), for the permutation null of :mod:`.cka_permutation`.
    """

    def __init__(
        self,
        n_layers_a: int,
        n_layers_b: int | None = None,
        *,
        keep_batch_terms: bool = False,
        keep_grams: bool = False,
    ) -> None:
        if n_layers_a < 1 or (n_layers_b is not None and n_layers_b < 1):
            raise UserInputError(
                f"MinibatchCKA needs at least one layer per side (got {n_layers_a}, {n_layers_b})"
            )
        self.n_layers_a = n_layers_a
        self.n_layers_b = n_layers_b
        self.keep_batch_terms = keep_batch_terms
        self.keep_grams = keep_grams
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
        self._grams: list[torch.Tensor] = []
        self._gram_of = ShiftedGram()  # kernels: scratch memory reused across batches
        self._stack = cka_kernels.GramStack()
        self._synced = False

    def update(
        self, features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor] | None = None
    ) -> None:
        """Add one batch: ``La`` (and ``Lb``) tensors ``[n, ...]`` of the same ``n`` examples."""
        features = self._batch(features_a, features_b, "feature tensors")
        if features is not None:
            self._add([self._gram_of(tensor) for tensor in features])

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
        self._add(grams)

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

    def _add(self, grams: list[torch.Tensor]) -> None:
        """Add ``HSIC_1(K_i, K_j) = <U(K_i), U(K_j)> / (n (n-3))`` of every pair of the Grams.

        The Grams are U-centred in float64, in place, as the rows of one ``[T, n*n]``
        matrix: one product gives every pair.
        """
        n = grams[0].shape[0]
        centred = u_center_(self._stack(grams)).view(len(grams), -1)
        hsic = (centred @ centred.T) / (n * (n - 3))
        self.hsic_sum = hsic.clone() if self.hsic_sum is None else self.hsic_sum + hsic
        self.n_batches += 1
        self.n_examples += n
        if self.keep_batch_terms:
            self._batch_terms.append(hsic)
        if self.keep_grams:
            self._grams.append(cka_kernels.upper_triangle(centred.view(len(grams), n, n)))

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

    def batch_grams(self) -> list[torch.Tensor]:
        """Per batch, ``[T, n (n - 1) / 2]``: the strict upper triangle of each U-centred
        Gram (float32); needs ``keep_grams``. The diagonal is 0 and the matrix symmetric,
        so ``<U(K), U(L)> = 2 <triu(U(K)), triu(U(L))>``."""
        if not self.keep_grams:
            raise RuntimeError("MinibatchCKA(keep_grams=False) keeps no Gram matrices")
        return list(self._grams)

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
        if self.keep_grams:
            kept: list = [None] * distributed.get_world_size(process_group)
            grams = [gram.cpu() for gram in self._grams]
            distributed.all_gather_object(kept, grams, group=process_group)
            self._grams = [gram for part in kept for gram in part]
        self._synced = True
