"""The two definitions of module criticality's loss bound and noise grid, and the edge rule.

Both minimise ``alpha^2 ||thetaF - theta0||^2 / sigma^2`` over an (alpha, sigma) grid
subject to ``E_u[L(theta(alpha) + u)] <= eps`` (:mod:`~transferlens.analysis.criticality`);
they differ in ``eps`` and in the sigma grid:

``epsilon`` (the default; Chatterji, Neyshabur & Sedghi, ICLR 2020, Definition 3.1)
    ``eps`` is an explicit, absolute bound on the mean training loss (cross-entropy /
    BCE), :data:`DEFAULT_EPSILON` unless given, the same for every module and model.
    The sigmas are log-spaced multiples of each module's own scale: ``sigma_j = rms_i *
    r_j`` with ``rms_i = sqrt(mean of the squares of the module's final parameters)``
    and ``r_j`` :func:`relative_sigma_grid` (``logspace`` over :data:`DEFAULT_SIGMA_SPAN`),
    so one grid fits a conv with weights ~0.1 and a Fixup scalar ~1 alike.
``reference``
    The public TensorFlow reference (google-research/meta-dataset): ``eps = tolerance x
    L(thetaF)`` and absolute sigmas ``linspace(1e-16, 1, n)``. At convergence
    ``L(thetaF) ~ 0``, no noise level passes the bound, and the minimiser is the grid's
    smallest sigma with a criticality of 1e30 and more: kept for comparison only.

The loss rather than the 0/1 training error: it is continuous in alpha and sigma, so the
mean over a few noise draws is a low-variance estimate of the expectation (an error
over 128 examples moves in steps of 1/128), and it is defined alike for multiclass and
multilabel targets. The default 0.1 (a mean cross-entropy of 0.1: the correct class
at ~90% probability on average) lies above the final training loss of a fitted model
(the demo's main models 0.003-0.075, PACS RI-T photo 0.045 on the analysed examples)
and far below chance (ln K: 1.9 for PACS' 7 classes).

Edge rule (:func:`resolved`): a grid minimum at alpha > 0 whose sigma is the grid's
smallest or largest sigma is not resolved by the grid (the true minimiser may lie
beyond it); nor is a module without any feasible point. alpha = 0 (the module fully
rewound still meets the bound) is a resolved criticality of exactly 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from transferlens.analysis.checks import check_count
from transferlens.errors import UserInputError

EPSILON, REFERENCE = "epsilon", "reference"
DEFINITIONS = (EPSILON, REFERENCE)
DEFAULT_EPSILON = 0.1
# Noise from a thousandth of the module's RMS (no effect on a healthy module) to ten
# times it (the module's weights drowned).
DEFAULT_SIGMA_SPAN = (1e-3, 10.0)
DEFAULT_N_SIGMAS = 11  # 2.5 per decade over DEFAULT_SIGMA_SPAN: the settings' default


def check_definition(definition: str) -> str:
    if definition not in DEFINITIONS:
        raise UserInputError(
            f"definition must be one of {', '.join(DEFINITIONS)} (got {definition!r})"
        )
    return definition


def check_span(span: Sequence[float], what: str = "sigma_span") -> tuple[float, float]:
    """``(low, high)`` with ``0 < low < high``, finite."""
    values = tuple(float(v) for v in span)
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserInputError(f"{what} must be two positive numbers (got {list(span)!r})")
    if values[0] >= values[1]:
        raise UserInputError(f"{what} must be increasing (got {list(span)!r})")
    return values


def relative_sigma_grid(
    n_sigmas: int = DEFAULT_N_SIGMAS, span: Sequence[float] = DEFAULT_SIGMA_SPAN
) -> tuple[float, ...]:
    """``logspace(log10 low, log10 high, n_sigmas)``: multiples of a module's RMS."""
    check_count(n_sigmas, "the number of sigmas", minimum=2)
    low, high = check_span(span)
    return tuple(float(r) for r in np.logspace(math.log10(low), math.log10(high), n_sigmas))


def module_rms(values: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """``sqrt(sum ||p||^2 / sum numel(p))`` over the parameters ``names`` (float64)."""
    squares = sum(float((values[n].double() ** 2).sum()) for n in names)
    count = sum(values[n].numel() for n in names)
    return math.sqrt(squares / count) if count else 0.0


def resolved(alpha: float, sigma: float, sigmas: Sequence[float]) -> bool:
    """Is the grid minimum at (``alpha``, ``sigma``) resolved by the grid ``sigmas``?

    No feasible point (alpha NaN): no. alpha = 0: yes (criticality 0 at any sigma).
    Otherwise: yes when ``sigma`` is neither the smallest nor the largest grid sigma.
    """
    if not math.isfinite(alpha):
        return False
    if alpha == 0.0:
        return True
    return min(sigmas) < sigma < max(sigmas)
