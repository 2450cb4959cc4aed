"""Module criticality (definition ``epsilon``) against its closed form on a linear model.

f(x) = w . x with the squared loss L(w) = (1/n) sum_i (w . x_i - y_i)^2 and noise
u ~ N(0, sigma^2 I) on w:

    E_u L(w + u) = L(w) + sigma^2 * m,     m = (1/n) sum_i ||x_i||^2

(the cross term 2 (w . x_i - y_i)(u . x_i) has mean 0 and E (u . x_i)^2 = sigma^2 ||x_i||^2).
So the point (alpha, sigma) is feasible iff L(theta_alpha) + sigma^2 m <= eps, and the
grid's minimum of alpha^2 ||w_F - w_0||^2 / sigma^2 over feasible points is known.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import module_criticality
from transferlens.analysis.criticality_definition import (
    module_rms,
    relative_sigma_grid,
    resolved,
)

D, N = 16, 64
ALPHAS = tuple(float(a) for a in np.linspace(0.0, 1.0, 11))


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(D, 1, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(weight.reshape(1, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def squared_error_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs.double() - targets.double()) ** 2).sum()


@pytest.fixture(scope="module")
def problem():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=generator)
    w_true = torch.randn(D, generator=generator)
    y = (x @ w_true + 0.1 * torch.randn(N, generator=generator)).reshape(N, 1)
    w_final = torch.linalg.lstsq(x.double(), y.double()).solution.reshape(D).float()
    # q = L(w_0) - L(w_F) ~ 2 (eps - L_F) puts the continuous optimum near alpha = 0.5.
    w_init = w_final + 0.07 * torch.randn(D, generator=generator)
    return x, y, w_final, w_init


def loss64(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """L(w) in float64 from float32 weights (the network computes in float32)."""
    residual = (x @ w.reshape(D, 1)).double() - y.double()
    return float((residual**2).mean())


def closed_form(problem, sigmas, epsilon, n_noise):
    """The grid minimum from E_u L = L(theta_alpha) + sigma^2 m, the continuous minimum,
    and the smallest margin |E_u L - eps| over the grid in standard errors of a mean of
    ``n_noise`` draws: one draw is L + 2 g.u + u'Su (g = (1/n) sum_i r_i x_i, S = X'X/n),
    of variance 4 sigma^2 |g|^2 + 2 sigma^4 tr(S^2)."""
    x, y, w_final, w_init = problem
    m = float((x.double() ** 2).sum(dim=1).mean())
    s = x.double().T @ x.double() / N
    trace = float((s @ s).trace())
    squared = float(((w_final.double() - w_init.double()) ** 2).sum())
    best, margin = (math.inf, math.nan, math.nan), math.inf
    for sigma in sigmas:  # the search's order: sigma-major, alpha-minor (ties: the first)
        for alpha in ALPHAS:
            w = torch.lerp(w_init, w_final, alpha)
            expected = loss64(w, x, y) + sigma**2 * m
            g = ((x @ w.reshape(D, 1)).double() - y.double()).reshape(N) @ x.double() / N
            spread = math.sqrt(4 * sigma**2 * float(g @ g) + 2 * sigma**4 * trace)
            margin = min(margin, abs(expected - epsilon) / (spread / math.sqrt(n_noise)))
            objective = alpha**2 * squared / sigma**2
            if expected <= epsilon and objective < best[0]:
                best = (objective, alpha, sigma)
    # Continuous: L(theta_alpha) = L_F + (1 - alpha)^2 q (w_F minimises L), so
    # mu(alpha) = alpha^2 |dw|^2 m / (eps - L_F - (1 - alpha)^2 q), minimised on a fine grid.
    loss_final = loss64(w_final, x, y)
    q = loss64(w_init, x, y) - loss_final
    fine = np.linspace(1e-6, 1.0, 200001)
    room = epsilon - loss_final - (1 - fine) ** 2 * q
    mu = np.where(room > 0, fine**2 * squared * m / np.where(room > 0, room, 1.0), np.inf)
    return best, float(mu.min()), float(fine[np.argmin(mu)]), margin


def criticality(problem, sigmas, epsilon, n_noise):
    x, y, w_final, w_init = problem
    loader = DataLoader(TensorDataset(x, y), batch_size=N)
    return module_criticality(
        Linear(w_final), Linear(w_init), loader, "multilabel", modules=["lin"],
        alphas=ALPHAS, sigmas=sigmas, n_noise=n_noise, epsilon=epsilon,
        loss_sum=squared_error_sum, seed=1,
    )  # fmt: skip


def test_the_noise_formula_holds_for_the_estimator(problem):
    """Mean over many draws of L(w + u) ~ L(w) + sigma^2 m (the formula the test relies on)."""
    x, y, w_final, _ = problem
    m = float((x.double() ** 2).sum(dim=1).mean())
    generator = torch.Generator().manual_seed(5)
    sigma = 0.05
    draws = [
        loss64(w_final + sigma * torch.randn(D, generator=generator), x, y) for _ in range(4000)
    ]
    assert np.mean(draws) == pytest.approx(loss64(w_final, x, y) + sigma**2 * m, rel=0.02)


def test_the_grid_minimum_is_the_closed_forms_within_the_grids_resolution(problem):
    _, _, w_final, _ = problem
    relative = relative_sigma_grid(13, (1e-3, 10.0))
    rms = module_rms({"w": w_final}, ["w"])
    sigmas = [rms * r for r in relative]
    epsilon = 0.03
    (value, alpha, sigma), mu_star, alpha_star, margin = closed_form(problem, sigmas, epsilon, 256)
    assert margin > 5  # every grid point 5 standard errors from the bound: decided alike
    assert 0 < alpha < 1 and resolved(alpha, sigma, sigmas)  # an interior, resolved optimum

    result = criticality(problem, relative, epsilon, n_noise=256)
    (module,) = result.modules
    assert result.epsilon == epsilon and result.settings["definition"] == "epsilon"
    assert module.resolved
    assert module.alpha == alpha and module.sigma == pytest.approx(sigma, rel=1e-12)
    assert module.criticality == pytest.approx(value, rel=1e-9)
    assert result.network_criticality == module.criticality
    # Within the grid's resolution of the continuous optimum mu*: the grid is a subset of
    # the feasible set (mu >= mu*), and the next grid alpha above alpha* with the grid
    # sigma just below sigma_max costs at most (sigma step)^2 (alpha_g / alpha*)^2.
    step = relative[1] / relative[0]
    alpha_above = min(a for a in ALPHAS if a >= alpha_star)
    assert mu_star <= module.criticality <= mu_star * step**2 * (alpha_above / alpha_star) ** 2


def test_a_minimiser_on_the_grids_edge_is_not_resolved(problem):
    # Top edge: every sigma of a tiny span passes at the best alpha, the largest wins.
    small = relative_sigma_grid(3, (1e-4, 1e-3))
    frame = criticality(problem, small, 0.05, n_noise=4).to_frame()
    row = frame.iloc[0]
    assert not row["resolved"] and math.isnan(row["criticality"])
    assert row["sigma"] == pytest.approx(1e-3 * module_rms_of(problem), rel=1e-9)
    assert 0 < row["alpha"] < 1  # where the grid minimum sat is still reported
    assert not frame.iloc[-1]["resolved"] and math.isnan(frame.iloc[-1]["criticality"])
    # Nothing feasible: noise far above the module's scale fails every point.
    large = relative_sigma_grid(3, (100.0, 1000.0))
    row = criticality(problem, large, 0.05, n_noise=2).to_frame().iloc[0]
    assert not row["resolved"] and math.isnan(row["criticality"]) and math.isnan(row["alpha"])


def test_a_bound_the_init_meets_gives_a_resolved_zero(problem):
    x, y, _, w_init = problem
    loose = 2 * loss64(w_init, x, y)  # the module fully rewound (alpha = 0) passes
    (module,) = criticality(problem, relative_sigma_grid(5, (1e-3, 1e-2)), loose, 4).modules
    assert module.resolved and module.criticality == 0.0 and module.alpha == 0.0


def module_rms_of(problem) -> float:
    return module_rms({"w": problem[2]}, ["w"])
