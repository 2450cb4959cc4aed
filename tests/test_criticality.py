"""Module criticality against a brute-force evaluation of the whole grid, and rewinding."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import criticality_grid, module_criticality, path_grid, rewind_module
from transferlens.analysis.perturb import ModuleSlot, noise_seed
from transferlens.errors import UserInputError

N = 96


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Linear(6, 12)
        self.block = nn.Linear(12, 12)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.block(torch.relu(self.conv1(x)))))


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, 6, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return TensorDataset(x, y)


def trained(steps: int = 150) -> tuple[Net, Net, list[dict[str, torch.Tensor]]]:
    """(final, init, checkpoints every 50 steps from the init on) of a short full-batch run."""
    torch.manual_seed(0)
    model = Net()
    init = copy.deepcopy(model)
    x, y = dataset().tensors
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    checkpoints = [copy.deepcopy(model.state_dict())]
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step % 50 == 0 and step < steps:
            checkpoints.append(copy.deepcopy(model.state_dict()))
    return model.eval(), init.eval(), checkpoints


def loader() -> DataLoader:
    return DataLoader(dataset(), batch_size=N)  # one batch: the brute force sums the same way


def full_loss(model: nn.Module) -> float:
    x, y = dataset().tensors
    with torch.no_grad():
        return F.cross_entropy(model(x), y, reduction="sum").double().item() / N


def brute_force(final, init, module, alphas, sigmas, n_noise, tolerance, seed):
    """Every grid point, every draw; the minimum objective among feasible points."""
    epsilon = tolerance * full_loss(final)
    names = [n for n, _ in final.named_parameters() if n.startswith(module + ".")]
    p_final = {n: p.detach().clone() for n, p in final.named_parameters()}
    p_init = {n: p.detach() for n, p in init.named_parameters()}
    squared = sum(float(((p_final[n].double() - p_init[n].double()) ** 2).sum()) for n in names)
    working = copy.deepcopy(final)
    params = dict(working.named_parameters())
    best = (math.inf, None, None, None)
    passes = 0
    for i_sigma, sigma in enumerate(sigmas):
        for i_alpha, alpha in enumerate(alphas):
            total = 0.0
            for sample in range(n_noise):
                generator = torch.Generator().manual_seed(
                    noise_seed(seed, module, i_sigma * len(alphas) + i_alpha, sample)
                )
                with torch.no_grad():
                    for n in names:
                        value = torch.lerp(p_init[n].detach(), p_final[n], alpha)
                        noise = torch.randn(value.shape, generator=generator, dtype=value.dtype)
                        params[n].copy_(value + noise * sigma)
                total += full_loss(working)
                passes += 1
            objective = (alpha / sigma) ** 2 * squared
            if total / n_noise <= epsilon and objective < best[0]:
                best = (objective, alpha, sigma, None)
    return best[0], best[1], best[2], passes


@pytest.fixture(scope="module")
def run():
    return trained()


@pytest.mark.parametrize(
    ("alphas", "sigmas", "n_noise", "tolerance"),
    [
        (np.linspace(0, 1, 11), np.linspace(1e-16, 1, 11), 10, 1.01),  # the reference grid
        (np.linspace(0, 1, 6), np.linspace(0.005, 0.1, 6), 4, 1.5),  # a grid with real trade-offs
    ],
)
def test_pruned_search_equals_brute_force_with_fewer_passes(
    run, alphas, sigmas, n_noise, tolerance
):
    final, init, _ = run
    result = module_criticality(
        final, init, loader(), "multiclass", definition="reference", alphas=alphas, sigmas=sigmas,
        n_noise=n_noise, tolerance=tolerance, seed=3,
    )  # fmt: skip
    frame = result.to_frame()
    columns = ["module", "rewind_metric", "criticality", "alpha", "sigma", "resolved",
               "criticality_low", "criticality_high"]  # fmt: skip
    assert list(frame.columns) == columns  # the bounds: NaN without n_bootstrap
    # The reference grid's minimiser sits on its edge (sigma = 1e-16): flagged, value kept.
    for _, row in frame.iloc[:-1].iterrows():
        edge = row["sigma"] in (min(sigmas), max(sigmas)) and row["alpha"] > 0
        assert row["resolved"] == (not edge and math.isfinite(row["alpha"]))
    assert list(frame["module"]) == ["conv1", "block", "fc", "network"]
    brute_passes = 0
    for module in ("conv1", "block", "fc"):
        value, alpha, sigma, passes = brute_force(
            final,
            init,
            module,
            [float(a) for a in alphas],
            [float(s) for s in sigmas],
            n_noise,
            tolerance,
            3,
        )
        brute_passes += passes
        got = frame.set_index("module").loc[module]
        assert got["criticality"] == value  # identical, not approximately equal
        assert (got["alpha"], got["sigma"]) == (alpha, sigma)
    assert frame["criticality"].iloc[-1] == sum(frame["criticality"].iloc[:-1])
    assert frame["criticality"].iloc[-1] == result.network_criticality
    assert result.n_full_grid_passes == brute_passes + 1
    # The reference grid (11 x 11 x 10) must cost at least 5x fewer passes; any grid fewer.
    factor = 5 if n_noise == 10 else 2
    assert result.n_forward_passes * factor <= result.n_full_grid_passes
    # Not every module is trivially re-windable: the test exercises the search.
    assert (frame["criticality"].iloc[:-1] > 0).any()
    full = module_criticality(
        final, init, loader(), "multiclass", definition="reference", alphas=alphas, sigmas=sigmas,
        n_noise=n_noise, tolerance=tolerance, seed=3, search="full",
    )  # fmt: skip
    assert full.to_frame().equals(frame)
    assert full.n_forward_passes == full.n_full_grid_passes
    assert result.settings["n_noise"] == n_noise and result.settings["search"] == "pruned"
    assert result.settings["alphas"] == [float(a) for a in alphas]


def test_vanishing_noise_reuses_the_noiseless_loss(run):
    final, init, _ = run
    slot = ModuleSlot(copy.deepcopy(final), "block")
    values = slot.values_from(final.state_dict())
    assert not slot.set(values, 1e-16, torch.Generator().manual_seed(0))  # lost in rounding
    assert slot.set(values, 0.1, torch.Generator().manual_seed(0))
    alphas, sigmas = np.linspace(0, 1, 11), [1e-16]
    pruned = module_criticality(
        final,
        init,
        loader(),
        "multiclass",
        definition="reference",
        alphas=alphas,
        sigmas=sigmas,
        n_noise=10,
        seed=3,
    )
    full = module_criticality(
        final, init, loader(), "multiclass", definition="reference", alphas=alphas, sigmas=sigmas, n_noise=10, seed=3,
        search="full",
    )  # fmt: skip
    assert pruned.to_frame().equals(full.to_frame())
    modules = len(pruned.modules)
    # At most one pass per (module, alpha) plus the reference, not one per draw.
    assert pruned.n_forward_passes <= 1 + modules * len(alphas)
    assert full.n_forward_passes == 1 + modules * len(alphas) * 10


def test_rewind_metric_is_the_metric_with_the_module_at_init(run):
    final, init, _ = run
    result = module_criticality(
        final, init, loader(), "multiclass", definition="reference", n_noise=1, modules=["block"]
    )
    frame = result.to_frame()
    assert [m.module for m in result.modules] == ["block"]
    rewound = rewind_module(final, init, "block")
    x, y = dataset().tensors
    with torch.no_grad():
        expected = float((rewound(x).argmax(1) == y).double().mean())
    assert frame["rewind_metric"].iloc[0] == pytest.approx(expected, abs=1e-12)
    assert torch.equal(rewound.block.weight, init.block.weight)
    assert torch.equal(rewound.fc.weight, final.fc.weight)
    assert not torch.equal(final.block.weight, init.block.weight)  # the input is untouched


def test_a_module_that_never_moved_is_not_critical(run):
    final, init, _ = run
    still = copy.deepcopy(init)
    still.fc.load_state_dict(final.fc.state_dict())
    result = module_criticality(
        final, still, loader(), "multiclass", definition="reference", n_noise=2
    )
    frame = result.to_frame().set_index("module")
    assert frame.loc["fc", "criticality"] == 0.0
    assert frame.loc["fc", "rewind_metric"] == result.final_metric
    assert torch.equal(
        rewind_module(final, still, "fc")(dataset().tensors[0]), final(dataset().tensors[0])
    )


def test_no_feasible_point_gives_infinity(run):
    final, init, _ = run
    frame = module_criticality(
        final, init, loader(), "multiclass", definition="reference", modules=["fc"], tolerance=0.5, n_noise=2,
        sigmas=[0.5, 1.0], alphas=[0.5, 1.0],
    ).to_frame()  # fmt: skip
    assert math.isinf(frame["criticality"].iloc[0]) and math.isnan(frame["alpha"].iloc[0])
    assert math.isinf(frame["criticality"].iloc[-1])


def test_bad_arguments_are_user_errors(run):
    final, init, _ = run
    with pytest.raises(UserInputError, match="sigmas"):
        module_criticality(final, init, loader(), "multiclass", sigmas=[0.0, 1.0])
    with pytest.raises(UserInputError, match="nothing"):
        module_criticality(final, init, loader(), "multiclass", modules=["nothing"])
    with pytest.raises(UserInputError, match="task"):
        module_criticality(final, init, loader(), "regression")
    with pytest.raises(UserInputError, match="n_noise"):
        module_criticality(final, init, loader(), "multiclass", n_noise=0)
    with pytest.raises(UserInputError, match="alphas"):
        criticality_grid(1, 11)


def test_the_criticality_grid_is_the_references():
    alphas, sigmas = criticality_grid()
    assert alphas == tuple(np.linspace(0.0, 1.0, 11).tolist())
    assert sigmas == tuple(np.linspace(1e-16, 1.0, 11).tolist())
    assert criticality_grid(3, 2) == ((0.0, 0.5, 1.0), (1e-16, 1.0))


def test_path_grid_ends_and_lengths(run):
    final, init, checkpoints = run
    result = path_grid(
        final,
        checkpoints,
        loader(),
        "multiclass",
        module="conv1",
        n_points=5,
        sigmas=[0.0, 0.05],
        n_noise=2,
    )
    frame = result.to_frame()
    assert len(result.points) == 2 * 5 * 2 and result.settings["module"] == "conv1"
    assert set(frame["path"]) == {"direct", "checkpoints"}
    assert list(frame.columns) == [
        "path",
        "distance",
        "distance_from_init",
        "sigma",
        "loss",
        "metric",
        "loss_low",
        "loss_high",
        "metric_low",
        "metric_high",
    ]
    start, end = checkpoints[0], final.state_dict()
    direct_length = math.sqrt(
        sum(
            float(((end[k].double() - start[k].double()) ** 2).sum())
            for k in ("conv1.weight", "conv1.bias")
        )
    )
    direct = frame[(frame["path"] == "direct") & (frame["sigma"] == 0.0)]
    assert direct["distance"].iloc[-1] == pytest.approx(direct_length, rel=1e-9)
    assert direct["distance_from_init"].tolist() == pytest.approx(
        direct["distance"].tolist(), rel=1e-5, abs=1e-9
    )
    states = [*checkpoints, final.state_dict()]
    segments = [
        math.sqrt(
            sum(
                float(((b[k].double() - a[k].double()) ** 2).sum())
                for k in ("conv1.weight", "conv1.bias")
            )
        )
        for a, b in zip(states, states[1:])
    ]
    along = frame[(frame["path"] == "checkpoints") & (frame["sigma"] == 0.0)]
    assert along["distance"].iloc[-1] == pytest.approx(sum(segments), rel=1e-9)
    assert sum(segments) >= direct_length
    # Both paths start at the rewound module and end at the final network.
    rewound_loss = full_loss(rewind_module(final, init, "conv1"))
    for path in (direct, along):
        assert path["loss"].iloc[0] == pytest.approx(rewound_loss, rel=1e-6)
        assert path["loss"].iloc[-1] == pytest.approx(full_loss(final), rel=1e-6)
