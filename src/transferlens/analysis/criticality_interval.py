"""Bootstrap interval of module criticality over the evaluation set, with no repeated pass.

Per grid point p the search keeps the per-example terms ``S_pj`` = the sum over the
``n_noise`` draws of example j's loss (the task loss, reduction ``"none"``). Resample b
of the examples (the project's seeded bootstrap, :func:`~transferlens.analysis.stats.resample_indices`:
the same resamples for every point, every module and every model with the same seed)
has the count vector ``c_b`` (how often each example was drawn) and the loss::

    m_pb = (c_b . S_p) / (n * n_noise)     -- for c_b = 1: the point's mean over draws of L

Its minimiser is the first point in (objective, reference order) with ``m_pb <= eps``;
``criticality_b`` is that point's objective, with the point estimate's edge rule
(:func:`resample_criticality`). The interval is the percentile interval (``confidence``,
default 95%) of the ``criticality_b``. The noise draws are the point estimate's, fixed
across resamples: the interval is over the evaluation set, not over the noise.

Exact, without evaluating the whole grid (:class:`IntervalSearch`): points are evaluated
in objective order, every draw and batch, until one point is feasible in every resample
(and the point estimate has its minimiser): no later point can be anyone's minimiser.
A point's evaluation is cut short once its running per-example sums prove it infeasible
for the point estimate (today's running-sum test) and for every resample still without a
minimiser: losses are >= 0, so ``c_b . S_partial`` bounds ``c_b . S_p`` from below. The
bound is tested with a relative margin of :data:`ROUNDING_MARGIN` (far above the float64
rounding of a sum over fewer than 10^6 examples), so a cut never drops a point some
resample would have taken. ``search="full"`` evaluates every point and picks each
resample's minimiser from all of them: the same values (a test checks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from transferlens.analysis.criticality_definition import resolved
from transferlens.analysis.criticality_search import Search, _Point, search_order
from transferlens.analysis.perturb import lerp_values
from transferlens.analysis.stats import index_counts, percentile_interval, resample_indices
from transferlens.metrics import task_loss

ROUNDING_MARGIN = 1e-9


def resample_counts(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``[n_bootstrap, n]`` float64 counts of the seeded resamples of ``n`` examples."""
    return index_counts(resample_indices(n, n_bootstrap, seed), n).astype(np.float64)


def resample_criticality(
    chosen: Sequence[_Point | None], sigmas: Sequence[float], relative: bool
) -> np.ndarray:
    """Each resample's criticality from its minimiser (``None``: none feasible).

    None feasible -> ``inf`` (the minimum over an empty set). Under the ``epsilon``
    definition (``relative``) a minimiser on the grid's edge is mapped to the bound it
    proves: smallest sigma -> ``inf`` (the true value is larger than the grid can say),
    largest sigma -> 0 (it may be smaller). Under ``reference`` the objective is kept,
    as the point estimate keeps it.
    """
    values = np.empty(len(chosen))
    for b, point in enumerate(chosen):
        if point is None:
            values[b] = math.inf
        elif not relative or resolved(point.alpha, point.sigma, sigmas):
            values[b] = point.objective
        else:
            values[b] = math.inf if point.sigma == min(sigmas) else 0.0
    return values


def interval_with_inf(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval (:func:`~transferlens.analysis.stats.percentile_interval`) of
    values that may be ``+inf``: a bound that interpolates towards an ``inf`` is ``inf``.

    Found without special cases: the interval is computed twice with the infinities
    replaced by two different finite numbers above every finite value; a bound that
    moves depends on an infinite replicate.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    infinite = np.isposinf(values)
    if not infinite.any():
        return percentile_interval(values, confidence)
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    first = percentile_interval(np.where(infinite, top, values), confidence)
    second = percentile_interval(np.where(infinite, 2.0 * abs(top) + 1.0, values), confidence)
    return tuple(a if a == b else math.inf for a, b in zip(first, second))  # type: ignore[return-value]


class IntervalSearch(Search):
    """:class:`~transferlens.analysis.criticality_search.Search` that also finds each
    resample's minimiser (see the module docstring). ``counts``: ``[B, n]`` float64."""

    def __init__(self, *args, counts: np.ndarray) -> None:
        super().__init__(*args)
        self.counts = counts
        # alpha -> (mean loss, per-example losses) of the noiseless network at theta(alpha)
        self.noiseless_terms: dict[float, tuple[float, np.ndarray]] = {}

    def _resample_losses(self, sums: np.ndarray) -> np.ndarray:
        """``m_b`` for every resample from per-example sums over draws (module docstring)."""
        return self.counts @ sums / (self.batches.n_examples * self.n_noise)

    def _proven_infeasible(self, estimate_open, draws_total, open_rows, sums) -> bool:
        """Does the partial evaluation already rule the point out for everyone still open?"""
        if estimate_open and not draws_total / self.n_noise > self.epsilon:
            return False
        if open_rows.any():
            lower = self._resample_losses(sums)[open_rows]
            return bool((lower > self.epsilon * (1.0 + ROUNDING_MARGIN)).all())
        return True

    @torch.inference_mode()
    def terms(
        self, point: _Point, estimate_open: bool, open_rows: np.ndarray | None
    ) -> tuple[bool, float, np.ndarray | None]:
        """(feasible for the point estimate, its mean loss over draws, per-example sums over
        the draws -- ``None`` when cut short). ``open_rows`` None: the full evaluation,
        every draw evaluated (as ``Search.feasible(early_stop=False)``); else cut short
        as the module docstring says and noiseless draws reuse their alpha's terms."""
        cut = open_rows is not None
        values = lerp_values(self.init, self.final, point.alpha)
        n_examples, n_noise = self.batches.n_examples, self.n_noise
        draws_sum = 0.0  # today's running sum: the estimate's test is unchanged, bit for bit
        sums = np.zeros(n_examples)
        for sample in range(n_noise):
            perturbed = self.set_draw(point, values, sample)
            reusable = cut and not perturbed
            if reusable and point.alpha in self.noiseless_terms:
                mean_loss, losses = self.noiseless_terms[point.alpha]
                draws_sum += mean_loss
                sums += losses
                if self._proven_infeasible(estimate_open, draws_sum, open_rows, sums):
                    return False, draws_sum / (sample + 1), None
                continue
            self.n_passes += 1
            draw = np.zeros(n_examples)
            loss_sum, start = 0.0, 0
            for inputs, targets in self.batches:
                outputs = self.working(inputs)
                loss_sum += float(task_loss(outputs, targets, self.task, "sum").double())
                stop = start + len(targets)
                draw[start:stop] = task_loss(outputs, targets, self.task, "none").double().cpu()
                start = stop
                self.n_batches += 1
                partial = draws_sum + loss_sum / n_examples
                if cut and self._proven_infeasible(estimate_open, partial, open_rows, sums + draw):
                    return False, partial / (sample + 1), None
            if reusable:
                self.noiseless_terms[point.alpha] = (loss_sum / n_examples, draw)
            draws_sum += loss_sum / n_examples
            sums += draw
        return draws_sum / n_noise <= self.epsilon, draws_sum / n_noise, sums

    def run_with_resamples(
        self, points: list[_Point], search: str
    ) -> tuple[_Point | None, float, list[_Point | None]]:
        """(the point estimate's minimiser, its mean loss, each resample's minimiser)."""
        ordered = search_order(points)
        chosen: list[_Point | None] = [None] * self.counts.shape[0]
        open_rows = np.ones(self.counts.shape[0], dtype=bool)
        best, best_loss = None, float("nan")

        def take(point: _Point, ok: bool, loss: float, sums: np.ndarray | None) -> None:
            nonlocal best, best_loss
            if best is None and ok:
                best, best_loss = point, loss
            if sums is not None and open_rows.any():
                hit = np.flatnonzero(open_rows & (self._resample_losses(sums) <= self.epsilon))
                for b in hit:
                    chosen[b] = point
                open_rows[hit] = False

        if search == "full":
            outcomes = {p.index: self.terms(p, True, None) for p in points}
            for point in ordered:
                take(point, *outcomes[point.index])
        else:
            for point in ordered:
                if best is not None and not open_rows.any():
                    break  # every later point has a larger objective: nobody's minimiser
                take(point, *self.terms(point, best is None, open_rows))
        self.slot.restore()
        return best, best_loss, chosen
