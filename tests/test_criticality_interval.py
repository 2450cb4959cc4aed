"""Module criticality's bootstrap interval over the evaluation set: the point estimate is
unchanged, the pruned interval search equals the full one and a float64 brute force, and
the edge mapping of resamples whose minimiser the grid does not resolve."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import module_criticality
from transferlens.analysis.criticality_definition import module_rms, relative_sigma_grid
from transferlens.analysis.criticality_interval import (
    IntervalSearch,
    interval_with_inf,
    resample_criticality,
)
from transferlens.analysis.criticality_search import _grid, _Point
from transferlens.analysis.evalcache import prepare_batches
from transferlens.analysis.perturb import ModuleSlot, noise_seed, squared_distance
from transferlens.analysis.stats import index_counts, percentile_interval, resample_indices

N = 64
SIGMAS = relative_sigma_grid(5, (1e-2, 10.0))
ALPHAS = np.linspace(0, 1, 5)
BOUND_COLUMNS = ["criticality_low", "criticality_high"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Linear(5, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv1(x)))


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(N, 5, generator=generator)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.4).long())


@pytest.fixture(scope="module")
def run() -> tuple[Net, Net]:
    torch.manual_seed(0)
    model = Net()
    init = copy.deepcopy(model)
    x, y = dataset().tensors
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), init.eval()


def criticality(run, batch_size=N, **options):
    final, init = run
    options = {"alphas": ALPHAS, "sigmas": SIGMAS, "n_noise": 3, "epsilon": 0.35, "seed": 2,
               **options}  # fmt: skip
    return module_criticality(
        final, init, DataLoader(dataset(), batch_size=batch_size), "multiclass", **options
    )


@pytest.mark.parametrize("definition", ["epsilon", "reference"])
@pytest.mark.parametrize("search", ["pruned", "full"])
def test_interval_mode_keeps_the_point_estimate_bit_for_bit(run, definition, search):
    extra = {"definition": definition, "tolerance": 3.0, "search": search, "batch_size": 16}
    plain = criticality(run, **extra)
    with_interval = criticality(run, n_bootstrap=50, **extra)
    reference = criticality(run, **{**extra, "search": "pruned"})
    for a, b, c in zip(plain.modules, with_interval.modules, reference.modules):
        assert (a.criticality, a.alpha, a.sigma, a.resolved, a.loss_at_minimum) == (
            b.criticality, b.alpha, b.sigma, b.resolved, b.loss_at_minimum
        ) == (c.criticality, c.alpha, c.sigma, c.resolved, c.loss_at_minimum)  # fmt: skip
    assert plain.to_frame()[BOUND_COLUMNS].isna().all().all()
    assert with_interval.to_frame()[BOUND_COLUMNS].notna().all().all()
    assert with_interval.settings["n_bootstrap"] == 50


def test_pruned_interval_equals_the_full_grid_and_costs_less(run):
    pruned = criticality(run, n_bootstrap=200, batch_size=16)
    full = criticality(run, n_bootstrap=200, batch_size=16, search="full")
    assert pruned.to_frame().equals(full.to_frame())
    assert pruned.n_forward_batches < full.n_forward_batches
    plain = criticality(run, batch_size=16)
    assert plain.n_forward_batches <= pruned.n_forward_batches


def test_identity_resample_reproduces_the_point_estimate(run):
    final, init = run
    result = criticality(run)
    working = copy.deepcopy(final)
    batches = prepare_batches(DataLoader(dataset(), batch_size=N), torch.device("cpu"))
    for module, found in zip(("conv1", "fc"), result.modules):
        slot = ModuleSlot(working, module)
        start, end = slot.values_from(init.state_dict()), slot.values_from(final.state_dict())
        sigmas = [module_rms(end, slot.parameter_names) * s for s in SIGMAS]
        points = _grid(list(ALPHAS), sigmas, squared_distance(end, start, slot.parameter_names))
        ones = np.ones((1, N))  # every example once: the resample is the evaluation set
        search = IntervalSearch(
            working, slot, start, end, batches, "multiclass", 3, 0.35, 2, counts=ones
        )
        best, _, (chosen,) = search.run_with_resamples(points, "pruned")
        assert chosen == best
        assert (best.alpha, best.sigma) == (found.alpha, found.sigma)


def brute_force_resamples(final, init, module, n_noise, epsilon, seed, n_bootstrap):
    """Float64 reference: every point and draw evaluated in full, then per resample the
    first feasible point in (objective, reference order), mapped by the edge rule."""
    x, y = dataset().tensors
    names = [n for n, _ in final.named_parameters() if n.startswith(module + ".")]
    p_final = {n: p.detach().clone() for n, p in final.named_parameters()}
    p_init = {n: p.detach().clone() for n, p in init.named_parameters()}
    squared = sum(float(((p_final[n].double() - p_init[n].double()) ** 2).sum()) for n in names)
    rms = math.sqrt(
        sum(float((p_final[n].double() ** 2).sum()) for n in names)
        / sum(p_final[n].numel() for n in names)
    )
    sigmas = [rms * s for s in SIGMAS]
    working = copy.deepcopy(final)
    params = dict(working.named_parameters())
    points, sums = [], []
    for i_sigma, sigma in enumerate(sigmas):
        for i_alpha, alpha in enumerate(ALPHAS):
            total = np.zeros(N)
            index = i_sigma * len(ALPHAS) + i_alpha
            for sample in range(n_noise):
                generator = torch.Generator().manual_seed(noise_seed(seed, module, index, sample))
                with torch.no_grad():
                    for n in names:
                        value = torch.lerp(p_init[n], p_final[n], float(alpha))
                        noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
                        params[n].copy_(value + noise * sigma)
                    losses = F.cross_entropy(working(x), y, reduction="none")
                total += losses.double().numpy()
            points.append(((alpha / sigma) ** 2 * squared, index, alpha, sigma))
            sums.append(total)
    counts = index_counts(resample_indices(N, n_bootstrap, seed), N).astype(np.float64)
    losses = counts @ np.array(sums).T / (N * n_noise)  # [resample, point]
    order = sorted(range(len(points)), key=lambda p: points[p][:2])
    values = np.full(n_bootstrap, math.inf)
    for b in range(n_bootstrap):
        for p in order:
            if losses[b, p] <= epsilon:
                objective, _, alpha, sigma = points[p]
                if alpha == 0 or min(sigmas) < sigma < max(sigmas):
                    values[b] = objective
                else:
                    values[b] = math.inf if sigma == min(sigmas) else 0.0
                break
    return values


@pytest.mark.parametrize("epsilon", [0.35, 0.6])
def test_interval_equals_a_float64_brute_force(run, epsilon):
    final, init = run
    result = criticality(run, n_bootstrap=300, epsilon=epsilon)
    network = np.zeros(300)
    for module, found in zip(("conv1", "fc"), result.modules):
        values = brute_force_resamples(final, init, module, 3, epsilon, 2, 300)
        network += values
        expected = interval_with_inf(values)
        assert found.criticality_low == pytest.approx(expected[0], rel=1e-9)
        assert found.criticality_high == pytest.approx(expected[1], rel=1e-9)
        if math.isfinite(found.criticality):
            assert found.criticality_low <= found.criticality * (1 + 1e-9)
    assert (result.network_low, result.network_high) == pytest.approx(
        interval_with_inf(network), rel=1e-9
    )


def test_a_custom_loss_has_no_interval(run):
    def squared(outputs, targets):
        return ((outputs - F.one_hot(targets, 3).float()) ** 2).sum()

    result = criticality(run, n_bootstrap=20, loss_sum=squared, epsilon=5.0)
    assert result.to_frame()[BOUND_COLUMNS].isna().all().all()


def test_edge_mapping_of_resamples():
    sigmas = [0.1, 1.0, 10.0]
    chosen = [
        _Point(0, 0.5, 1.0, 7.0),  # inside: its objective
        _Point(1, 0.5, 0.1, 9.0),  # smallest sigma: the true value is larger
        _Point(2, 0.5, 10.0, 3.0),  # largest sigma: it may be smaller
        _Point(3, 0.0, 0.1, 0.0),  # fully rewound: resolved 0 at any sigma
        None,  # nothing feasible
    ]
    assert list(resample_criticality(chosen, sigmas, relative=True)) == [7.0, math.inf, 0.0, 0.0,
                                                                          math.inf]  # fmt: skip
    # The reference definition keeps the objective on the edge, as its point estimate does.
    assert list(resample_criticality(chosen, sigmas, relative=False)) == [7.0, 9.0, 3.0, 0.0,
                                                                           math.inf]  # fmt: skip


def test_interval_with_infinite_replicates():
    finite = np.arange(100.0)
    assert interval_with_inf(finite) == percentile_interval(finite)
    values = np.concatenate([np.arange(90.0), np.full(10, math.inf)])
    low, high = interval_with_inf(values)
    assert low == percentile_interval(values[:90].tolist() + [1e9] * 10)[0]
    assert high == math.inf  # the 97.5% quantile falls among the infinite resamples
    assert interval_with_inf(np.full(5, math.inf)) == (math.inf, math.inf)
    assert interval_with_inf(np.array([0.0, 0.0, math.inf])) == (0.0, math.inf)
