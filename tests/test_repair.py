"""REPAIR (transferlens.analysis.repair): the interpolated network's units renormalised.

Every statistic is checked against a float64 reference computed here from all the
outputs at once (the library streams running sums): after repair, each hidden unit's
mean and std over the loader are ``(1 - lam)`` times model A's plus ``lam`` times
model B's. The ends of the path and an exact permutation aligned back are left as
they are; a network with BatchNorm gets its statistics re-estimated, nothing else.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tiny_models import images, require, timm_vit, user_cnn
from transferlens.analysis import align, repair, repair_details
from transferlens.analysis.interpolation import interpolate_state_dicts, recompute_batchnorm
from transferlens.analysis.permutation_groups import permutation_groups, permute_state
from transferlens.errors import UserInputError
from transferlens.models import build_model

TOL = 1e-3  # repair's default: units within 0.1% of their target std


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Move every parameter off its special initial value (Fixup zero-initialises its
    last convs), so that every unit varies and no two networks are alike."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def fixup(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("fixup_resnet10", 10, stem="cifar", width=8)
    return _randomise(model, seed)


def vit(seed: int) -> nn.Module:
    require("timm_vit")
    return _randomise(timm_vit(num_classes=5, seed=seed), seed)


FAMILIES = {"fixup": fixup, "vit": vit}
LAYERS = {
    "fixup": ["conv1"]
    + [f"layer{i}.0.conv{j}" for i in range(1, 5) for j in (1, 2)]
    + [f"layer{i}.0.downsample" for i in range(2, 5)],
    "vit": ["patch_embed.proj"]
    + [
        f"blocks.{i}.{m}" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    ],
}


def loader() -> list[tuple[torch.Tensor, None]]:
    return [(images(16, seed=seed), None) for seed in range(3)]


def interpolated(model_a: nn.Module, model_b: nn.Module, lam: float) -> nn.Module:
    model = copy.deepcopy(model_a)
    model.load_state_dict(interpolate_state_dicts(model_a, model_b, lam))
    return model.eval()


@torch.no_grad()
def reference_stats(model: nn.Module, layers: list[str], batches: list) -> dict:
    """``{layer: (mean, std)}`` per output channel, float64, from every output at once."""
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = []
    for name in layers:
        dim = -1 if isinstance(model.get_submodule(name), nn.Linear) else 1

        def hook(_m, _a, out, name=name, dim=dim) -> None:
            values = out.double().movedim(dim, -1)
            outputs[name].append(values.reshape(-1, values.shape[-1]))

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    model.eval()
    for inputs, _ in batches:
        model(inputs)
    for handle in handles:
        handle.remove()
    stacked = {name: torch.cat(values) for name, values in outputs.items()}
    return {name: (v.mean(0), v.std(0, unbiased=False)) for name, v in stacked.items()}


def largest_deviation(stats: dict, target_a: dict, target_b: dict, lam: float) -> float:
    """The largest |mean - target| or |std - target std| over all units, in target stds."""
    worst = 0.0
    for name, (mean, std) in stats.items():
        mean_t = (1 - lam) * target_a[name][0] + lam * target_b[name][0]
        std_t = (1 - lam) * target_a[name][1] + lam * target_b[name][1]
        error = torch.maximum((mean - mean_t).abs(), (std - std_t).abs()) / std_t
        worst = max(worst, float(error.max()))
    return worst


def outputs(model: nn.Module, batches: list) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.eval()(inputs) for inputs, _ in batches])


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("lam", [0.5, 0.25])
def test_repaired_units_have_the_interpolated_statistics(family: str, lam: float) -> None:
    model_a, model_b = FAMILIES[family](0), FAMILIES[family](1)
    model_b = align(model_a, model_b, max_iter=3)
    batches = loader()
    mixed = interpolated(model_a, model_b, lam)
    before = {key: value.clone() for key, value in mixed.state_dict().items()}

    result = repair_details(model_a, model_b, mixed, batches, lam)

    assert result.mode == "affine" and result.converged and result.error <= TOL
    assert sorted(result.layers) == sorted(LAYERS[family])  # hidden convs/linears, not the head
    layers = list(result.layers)
    stats_a = reference_stats(model_a, layers, batches)
    stats_b = reference_stats(model_b, layers, batches)
    assert largest_deviation(reference_stats(mixed, layers, batches), stats_a, stats_b, lam) > 0.05
    after = largest_deviation(reference_stats(result.model, layers, batches), stats_a, stats_b, lam)
    assert after <= 1.01 * TOL
    # the inputs are left alone
    assert all(torch.equal(before[key], value) for key, value in mixed.state_dict().items())


def test_corrections_live_in_the_layers_and_survive_a_copy() -> None:
    model_a, model_b = fixup(0), fixup(1)
    mixed = interpolated(model_a, model_b, 0.5)
    repaired = repair(model_a, model_b, mixed, loader(), 0.5)
    state, original = repaired.state_dict(), mixed.state_dict()
    # Fixup's stem adds a scalar after its convolution: a fixed affine child; the block
    # convolutions (no bias) gain a bias; the head and the scalars are untouched.
    assert {"conv1.repair_affine.scale", "conv1.repair_affine.shift"} <= set(state)
    assert "layer1.0.conv1.bias" in state and "layer1.0.conv1.bias" not in original
    for key in ("fc.weight", "fc.bias", "layer1.0.scale", "layer1.0.bias1a", "conv1.weight"):
        assert torch.equal(state[key], original[key])
    x = images(4, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(repaired)(x), repaired(x), rtol=0, atol=0)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_ends_of_the_path_are_unchanged(family: str) -> None:
    model_a, model_b = FAMILIES[family](0), FAMILIES[family](1)
    batches = loader()
    for lam, end in ((0.0, model_a), (1.0, model_b)):
        result = repair_details(model_a, model_b, interpolated(model_a, model_b, lam), batches, lam)
        assert result.passes == 1 and result.error <= TOL
        torch.testing.assert_close(outputs(result.model, batches), outputs(end, batches))


def _random_permutations(groups, seed: int) -> dict[str, torch.Tensor]:
    """A random permutation per group: whole heads (shared per head set), then units."""
    generator = torch.Generator().manual_seed(seed)
    heads: dict[str, torch.Tensor] = {}
    perms = {}
    for group in groups:
        if group.heads == 1:
            perms[group.name] = torch.randperm(group.size, generator=generator)
            continue
        order = heads.setdefault(group.head_set, torch.randperm(group.heads, generator=generator))
        width = group.size // group.heads
        perms[group.name] = torch.cat(
            [h * width + torch.randperm(width, generator=generator) for h in order.tolist()]
        )
    return perms


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_exact_permutation_aligned_back_is_unchanged(family: str) -> None:
    model_a = FAMILIES[family](0)
    groups = permutation_groups(model_a, images(2))
    model_b = copy.deepcopy(model_a)
    model_b.load_state_dict(
        permute_state(model_a.state_dict(), groups, _random_permutations(groups, 5))
    )
    aligned = align(model_a, model_b)
    batches = loader()
    mixed = interpolated(model_a, aligned, 0.5)
    repaired = repair(model_a, aligned, mixed, batches, 0.5)
    torch.testing.assert_close(outputs(repaired, batches), outputs(model_a, batches))


def test_chosen_layers_only() -> None:
    model_a, model_b = fixup(0), fixup(1)
    batches = loader()
    mixed = interpolated(model_a, model_b, 0.5)
    result = repair_details(model_a, model_b, mixed, batches, 0.5, layers=["layer2.0.conv1"])
    assert result.layers == ("layer2.0.conv1",) and result.converged
    stats = reference_stats(result.model, ["layer2.0.conv1"], batches)
    stats_a = reference_stats(model_a, ["layer2.0.conv1"], batches)
    stats_b = reference_stats(model_b, ["layer2.0.conv1"], batches)
    assert largest_deviation(stats, stats_a, stats_b, 0.5) <= 1.01 * TOL
    assert set(result.model.state_dict()) == set(mixed.state_dict()) | {"layer2.0.conv1.bias"}


def test_a_batchnorm_network_has_its_statistics_reestimated() -> None:
    model_a, model_b = _randomise(user_cnn(seed=0), 0), _randomise(user_cnn(seed=1), 1)
    batches = loader()
    mixed = interpolated(model_a, model_b, 0.5)
    result = repair_details(model_a, model_b, mixed, batches, 0.5)
    expected = recompute_batchnorm(copy.deepcopy(mixed), batches)
    assert result.mode == "batchnorm" and result.layers == ()
    state = result.model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in expected.state_dict().items())
    with pytest.raises(UserInputError, match="BatchNorm"):
        repair(model_a, model_b, mixed, batches, 0.5, layers=["entry"])


def test_bad_input_is_one_line() -> None:
    model_a, model_b = fixup(0), fixup(1)
    mixed = interpolated(model_a, model_b, 0.5)
    batches = loader()
    cases = [
        ({"lam": 1.5}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"tol": 0}, "tol"),
        ({"max_passes": 2}, "max_passes"),
        ({"layers": ["relu"]}, "'relu' is not a Conv or Linear"),
        ({"loader": []}, "no batches"),
        ({"loader": iter(batches)}, "not an iterator"),
    ]
    for change, message in cases:
        arguments = {"loader": batches, "lam": 0.5, **change}
        loader_, lam = arguments.pop("loader"), arguments.pop("lam")
        with pytest.raises(UserInputError, match=message) as error:
            repair(model_a, model_b, mixed, loader_, lam, **arguments)
        assert "\n" not in str(error.value)
    with pytest.raises(UserInputError):
        repair(model_a, fixup(1).fc, mixed, batches, 0.5)


def test_endpoints_measured_once_give_the_same_repair() -> None:
    """The end models' statistics measured once per pair (repair_endpoints) repair every
    point exactly as measuring them again with each point does."""
    from transferlens.analysis.unit_repair import repair_endpoints

    model_a, model_b = fixup(0), align(fixup(0), fixup(1))
    batches = loader()
    endpoints = repair_endpoints(model_a, model_b, batches)
    for lam in (0.25, 0.5):
        middle = interpolated(model_a, model_b, lam)
        fresh = repair_details(model_a, model_b, middle, batches, lam)
        cached = repair_details(model_a, model_b, middle, batches, lam, endpoints=endpoints)
        assert cached.passes == fresh.passes and cached.error == fresh.error
        assert torch.equal(outputs(cached.model, batches), outputs(fresh.model, batches))
