"""CKA against references written from the formulas, its invariances, and MinibatchCKA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlens.analysis.cka_estimators import MinibatchCKA, gram_linear, linear_cka, rbf_cka
from transferlens.errors import UserInputError


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- float64 references, straight from the papers' formulas -----------------------


def hsic_biased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Gretton et al. 2005: tr(K H L H) / (n - 1)^2."""
    n = K.shape[0]
    H = torch.eye(n, dtype=torch.float64) - torch.full((n, n), 1.0 / n, dtype=torch.float64)
    return torch.trace(K @ H @ L @ H) / (n - 1) ** 2


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Song et al. 2012, HSIC_1."""
    n = K.shape[0]
    K, L = K.clone(), L.clone()
    K.fill_diagonal_(0.0)
    L.fill_diagonal_(0.0)
    one = torch.ones(n, dtype=torch.float64)
    return (
        torch.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def cka_reference(K: torch.Tensor, L: torch.Tensor, hsic) -> float:
    return float(hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L)))


def linear_gram(x: torch.Tensor) -> torch.Tensor:
    x = x.double().flatten(1)
    return x @ x.T


def minibatch_reference(features_a, features_b, batch_size: int) -> np.ndarray:
    """sum_b HSIC_1(K_i^b, L_j^b) / sqrt(sum_b HSIC_1(K_i^b, K_i^b) sum_b HSIC_1(L_j^b, L_j^b))."""
    n = features_a[0].shape[0]
    starts = range(0, n, batch_size)

    def total(x, y):
        return sum(
            hsic_unbiased(linear_gram(x[s : s + batch_size]), linear_gram(y[s : s + batch_size]))
            for s in starts
        )

    out = np.zeros((len(features_a), len(features_b)))
    for i, x in enumerate(features_a):
        for j, y in enumerate(features_b):
            out[i, j] = total(x, y) / math.sqrt(total(x, x) * total(y, y))
    return out


def related_features(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(seed)
    latent = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x = latent @ torch.randn(5, 12, generator=g, dtype=torch.float64)
    x = x + 0.8 * torch.randn(n, 12, generator=g, dtype=torch.float64)
    y = torch.tanh(latent @ torch.randn(5, 90, generator=g, dtype=torch.float64))
    y = y + 0.5 * torch.randn(n, 90, generator=g, dtype=torch.float64)
    return x, y


# ---- full-data CKA ----------------------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_representation_with_itself_is_one(debiased):
    x, _ = related_features()
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased,hsic", [(False, hsic_biased), (True, hsic_unbiased)])
def test_linear_cka_matches_the_hsic_formula(debiased, hsic):
    x, y = related_features()
    expected = cka_reference(linear_gram(x), linear_gram(y), hsic)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(expected, abs=1e-12)
    assert linear_cka(x.numpy(), y.float(), debiased=debiased) == pytest.approx(expected, abs=1e-6)
    assert 0.2 < expected < 0.95  # a non-trivial value


def brute_force_rbf_gram(x: torch.Tensor, sigma: float | None) -> torch.Tensor:
    rows = x.double().tolist()
    n = len(rows)
    sq = [[sum((a - b) ** 2 for a, b in zip(rows[i], rows[j])) for j in range(n)] for i in range(n)]
    if sigma is None:
        # sigma = sqrt(median of all n^2 squared distances), diagonal included.
        ordered = sorted(value for row in sq for value in row)
        middle = len(ordered) // 2
        median = (
            ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        )
        sigma = math.sqrt(median)
    gram = [[math.exp(-sq[i][j] / (2 * sigma**2)) for j in range(n)] for i in range(n)]
    return torch.tensor(gram, dtype=torch.float64)


@pytest.mark.parametrize("sigma", [None, 3.0])
@pytest.mark.parametrize("debiased,hsic", [(False, hsic_biased), (True, hsic_unbiased)])
def test_rbf_cka_matches_a_brute_force_reference(sigma, debiased, hsic):
    x, y = related_features(n=13, seed=4)
    expected = cka_reference(brute_force_rbf_gram(x, sigma), brute_force_rbf_gram(y, sigma), hsic)
    assert rbf_cka(x, y, sigma=sigma, debiased=debiased) == pytest.approx(expected, abs=1e-12)


def test_rbf_median_fraction_scales_the_bandwidth():
    x, y = related_features(n=13, seed=4)

    def half_median_sigma(z: torch.Tensor) -> float:
        return 0.5 * math.sqrt(float(np.median((torch.cdist(z, z) ** 2).flatten().numpy())))

    expected = cka_reference(
        brute_force_rbf_gram(x, half_median_sigma(x)),
        brute_force_rbf_gram(y, half_median_sigma(y)),
        hsic_biased,
    )
    assert rbf_cka(x, y, median_fraction=0.5) == pytest.approx(expected, abs=1e-10)
    assert abs(rbf_cka(x, y) - expected) > 1e-3


def random_orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances_and_the_lack_of_one(debiased):
    x, y = related_features()
    shift = 5.0 + torch.randn(x.shape[1], generator=generator(2), dtype=torch.float64)
    for function in (linear_cka, rbf_cka):
        base = function(x, y, debiased=debiased)
        assert function(x @ random_orthogonal(12, 1), y, debiased=debiased) == pytest.approx(
            base, abs=1e-10
        )
        assert function(3.7 * x, y, debiased=debiased) == pytest.approx(base, abs=1e-10)
        assert function(x + shift, y, debiased=debiased) == pytest.approx(base, abs=1e-10)
        stretched = x * torch.logspace(-1, 1, 12, dtype=torch.float64)
        assert abs(function(stretched, y, debiased=debiased) - base) > 1e-2


def test_debiased_cka_of_independent_features_is_near_zero():
    # Over 100 draws at n=400, d=30 the debiased value has sd ~0.0035 (so 0.02 is ~6 sd),
    # while the biased estimator sits near d/n-ish ~0.07 for independent features.
    g = generator(11)
    x = torch.randn(400, 30, generator=g, dtype=torch.float64)
    y = torch.randn(400, 30, generator=g, dtype=torch.float64)
    assert abs(linear_cka(x, y, debiased=True)) < 0.02
    assert linear_cka(x, y) > 0.05


def test_bad_inputs_raise_user_input_error():
    x, y = related_features()
    with pytest.raises(UserInputError, match="same examples"):
        linear_cka(x, y[:-1])
    with pytest.raises(UserInputError, match="n >= 4"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(UserInputError, match="matrix"):
        linear_cka(x[:, 0], y[:, 0])
    with pytest.raises(UserInputError, match="sigma"):
        rbf_cka(torch.zeros(10, 3), y[:10])


# ---- MinibatchCKA -----------------------------------------------------------------


def test_one_batch_of_all_data_equals_the_full_data_unbiased_cka():
    x, y = related_features()
    estimator = MinibatchCKA(2, 2)
    estimator.update([x, y], [y, x.float()])
    result = estimator.compute()
    assert result.shape == (2, 2)
    assert result[0, 0] == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-9)
    assert result[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert result[1, 0] == pytest.approx(1.0, abs=1e-9)


def test_batches_match_the_per_batch_hsic_reference():
    x, y = related_features(n=80)
    z = torch.relu(y[:, :40])
    estimator = MinibatchCKA(2, 1)
    for start in range(0, 80, 16):
        estimator.update([x[start : start + 16], z[start : start + 16]], [y[start : start + 16]])
    expected = minibatch_reference([x, z], [y], 16)
    np.testing.assert_allclose(estimator.compute().numpy(), expected, atol=1e-10)
    assert estimator.n_batches == 5 and estimator.n_examples == 80


def test_one_sided_estimator_compares_every_pair_of_its_layers():
    x, y = related_features()
    estimator = MinibatchCKA(3)
    estimator.update([x, y, x])
    result = estimator.compute().numpy()
    assert result.shape == (3, 3)
    np.testing.assert_allclose(result.diagonal(), 1.0, atol=1e-12)
    assert result[0, 2] == pytest.approx(1.0, abs=1e-12)
    assert result[0, 1] == pytest.approx(result[1, 0], abs=1e-15)


def test_the_cut_into_batches_does_not_matter_in_expectation():
    """HSIC_1 is a U-statistic: over random equal cuts its batch mean is the full-data value.

    Tolerance: 4 standard errors of the mean over 200 random cuts (not a fixed number).
    """
    x, y = related_features(n=240, seed=3)
    y = torch.relu(y)
    full = MinibatchCKA(1, 1)
    full.update([x], [y])
    g = generator(5)
    per_batch_hsic, ckas = [], []
    for _ in range(200):
        order = torch.randperm(240, generator=g)
        estimator = MinibatchCKA(1, 1)
        for start in range(0, 240, 24):
            rows = order[start : start + 24]
            estimator.update([x[rows]], [y[rows]])
        per_batch_hsic.append((estimator.hsic_sum / estimator.n_batches).numpy())
        ckas.append(float(estimator.compute()))
    per_batch_hsic, ckas = np.array(per_batch_hsic), np.array(ckas)
    standard_error = per_batch_hsic.std(axis=0, ddof=1) / math.sqrt(200)
    assert (np.abs(per_batch_hsic.mean(axis=0) - full.hsic_sum.numpy()) < 4 * standard_error).all()
    full_cka = float(full.compute())
    assert abs(ckas.mean() - full_cka) < 4 * ckas.std(ddof=1) / math.sqrt(200)
    assert ckas.std() > 0  # the cut does change a single estimate


def hsic_reference_float32(K32: torch.Tensor, L32: torch.Tensor) -> torch.Tensor:
    """The same HSIC_1 formula evaluated entirely in float32 (as popular libraries do)."""
    n = K32.shape[0]
    K, L = K32.clone(), L32.clone()
    K.fill_diagonal_(0.0)
    L.fill_diagonal_(0.0)
    one = torch.ones(n, dtype=torch.float32)
    return (
        torch.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def test_float32_features_with_a_large_mean_stay_within_1e_5_of_float64():
    # Post-ReLU-like float32 features: mean ~10, small spread, d = 10k, batches of 64.
    n, d, batch = 256, 10_000, 64
    g = generator(0)
    shared = torch.randn(n, 8, generator=g)

    def features() -> torch.Tensor:
        private = torch.randn(n, 8, generator=g)
        signal = torch.cat([shared, private], dim=1) @ torch.randn(16, d, generator=g) / 4
        return torch.relu(0.5 * (signal + torch.randn(n, d, generator=g)) + 10.0)

    a, b = [features(), features()], [features()]
    estimator = MinibatchCKA(2, 1)
    for start in range(0, n, batch):
        estimator.update(
            [f[start : start + batch] for f in a], [f[start : start + batch] for f in b]
        )
    expected = minibatch_reference(a, b, batch)  # float64 from the float32 values
    assert a[0].mean() == pytest.approx(10.0, abs=0.1) and a[0].dtype == torch.float32
    assert 0.1 < expected[0, 0] < 0.9
    np.testing.assert_allclose(estimator.compute().numpy(), expected, rtol=0, atol=1e-5)

    # The same estimator in float32 throughout is far off: the test can tell.
    def float32_total(x, y):
        return sum(
            hsic_reference_float32(
                x[s : s + batch] @ x[s : s + batch].T, y[s : s + batch] @ y[s : s + batch].T
            )
            for s in range(0, n, batch)
        )

    naive = float32_total(a[0], b[0]) / torch.sqrt(
        float32_total(a[0], a[0]) * float32_total(b[0], b[0])
    )
    assert not abs(float(naive) - expected[0, 0]) < 1e-4


def test_translation_of_the_features_does_not_change_the_estimate():
    x, y = related_features(n=96)
    shifted = x.float() + 100.0
    plain, moved = MinibatchCKA(1, 1), MinibatchCKA(1, 1)
    for start in range(0, 96, 32):
        plain.update([x[start : start + 32]], [y[start : start + 32]])
        moved.update([shifted[start : start + 32]], [y[start : start + 32]])
    assert float(moved.compute()) == pytest.approx(float(plain.compute()), abs=1e-5)


@pytest.mark.parametrize("remainder", [1, 2, 3])
def test_a_final_batch_under_four_examples_is_skipped_and_counted(remainder):
    x, y = related_features(n=32 + remainder)
    with_tail, without_tail = MinibatchCKA(1, 1), MinibatchCKA(1, 1)
    for start in range(0, 32 + remainder, 16):
        with_tail.update([x[start : start + 16]], [y[start : start + 16]])
        if start < 32:
            without_tail.update([x[start : start + 16]], [y[start : start + 16]])
    result = with_tail.compute()
    assert torch.isfinite(result).all()
    assert with_tail.skipped_examples == remainder and with_tail.skipped_batches == 1
    assert with_tail.n_examples == 32 and with_tail.n_batches == 2
    torch.testing.assert_close(result, without_tail.compute(), rtol=0, atol=0)


def test_only_small_batches_is_a_clear_error():
    x, y = related_features(n=6)
    estimator = MinibatchCKA(1, 1)
    estimator.update([x[:3]], [y[:3]])
    estimator.update([x[3:]], [y[3:]])
    with pytest.raises(UserInputError, match="6 examples skipped"):
        estimator.compute()


def test_batch_terms_sum_to_the_total_and_reset_clears():
    x, y = related_features(n=64)
    estimator = MinibatchCKA(1, 1, keep_batch_terms=True)
    for start in range(0, 64, 16):
        estimator.update([x[start : start + 16]], [y[start : start + 16]])
    terms = estimator.batch_hsic()
    assert terms.shape == (4, 2, 2)
    torch.testing.assert_close(terms.sum(dim=0), estimator.hsic_sum)
    estimator.reset()
    assert estimator.hsic_sum is None and estimator.n_batches == 0


def test_batches_of_several_sizes_reuse_the_buffer_and_match_the_reference():
    # 16, 16, 7 and 16 examples: the centring buffer is remade for 7 and again for 16.
    x, y = related_features(n=55)
    estimator = MinibatchCKA(1, 1)
    sums = {"xy": 0.0, "xx": 0.0, "yy": 0.0}
    for start, stop in [(0, 16), (16, 32), (32, 39), (39, 55)]:
        estimator.update([x[start:stop]], [y[start:stop]])
        gram_x, gram_y = linear_gram(x[start:stop]), linear_gram(y[start:stop])
        sums["xy"] += float(hsic_unbiased(gram_x, gram_y))
        sums["xx"] += float(hsic_unbiased(gram_x, gram_x))
        sums["yy"] += float(hsic_unbiased(gram_y, gram_y))
    expected = sums["xy"] / math.sqrt(sums["xx"] * sums["yy"])
    assert float(estimator.compute()) == pytest.approx(expected, abs=1e-10)


def test_shifted_gram_is_the_gram_of_the_centred_features_whatever_the_shapes_and_modes():
    from transferlens.analysis.cka_estimators import ShiftedGram

    gram_of = ShiftedGram()
    g = generator(5)
    for shape in [(32, 3, 4, 4), (8, 200), (32, 3, 4, 4), (64, 10)]:  # grows, shrinks, grows
        x = torch.randn(*shape, generator=g) * 3 + 50  # a large mean
        rows = x.double().reshape(shape[0], -1)
        centred = rows - rows.mean(dim=0, keepdim=True)
        gram = gram_of(x)
        assert gram.dtype == torch.float32 and torch.equal(gram, gram.T)
        torch.testing.assert_close(gram.double(), centred @ centred.T, rtol=1e-5, atol=1e-3)
    exact = gram_of(rows)  # float64 features stay float64
    assert exact.dtype == torch.float64
    torch.testing.assert_close(exact, centred @ centred.T, rtol=1e-12, atol=1e-9)
    half = gram_of(x.bfloat16())  # lower precision: promoted to float32
    assert half.dtype == torch.float32
    with torch.inference_mode():  # a buffer made here cannot be written outside it
        inside = gram_of(x)
    outside = gram_of(x)
    assert torch.equal(inside, outside)


def test_update_grams_equals_update_on_the_features():
    from transferlens.analysis.cka_estimators import ShiftedGram

    x, y = related_features(n=64)
    z = torch.relu(y[:, :30]).float() + 10  # float32, a large mean
    on_features, on_grams = MinibatchCKA(2, 1), MinibatchCKA(2, 1)
    gram_of = ShiftedGram()
    for start in range(0, 64, 16):
        part = slice(start, start + 16)
        on_features.update([x[part], z[part]], [y[part]])
        on_grams.update_grams([gram_of(x[part]), gram_of(z[part])], [gram_of(y[part])])
    torch.testing.assert_close(on_grams.hsic_sum, on_features.hsic_sum, rtol=0, atol=0)
    with pytest.raises(ValueError, match="must be \\[n, n\\]"):
        on_grams.update_grams([x[:16], x[:16]], [y[:16]])
    with pytest.raises(ValueError, match="expected 2 \\+ 1 Gram matrices"):
        on_grams.update_grams([gram_of(x[:16])], [gram_of(y[:16])])


def test_update_checks_the_number_and_size_of_the_feature_tensors():
    x, y = related_features(n=16)
    estimator = MinibatchCKA(2, 1)
    with pytest.raises(ValueError, match="expected 2 \\+ 1"):
        estimator.update([x], [y])
    with pytest.raises(ValueError, match="same batch size"):
        estimator.update([x, x[:8]], [y])


def test_sync_in_a_single_process_group_keeps_the_state(tmp_path):
    distributed = torch.distributed
    if not distributed.is_available():
        pytest.skip("torch.distributed is not available")
    x, y = related_features(n=48)
    estimator = MinibatchCKA(1, 1, keep_batch_terms=True)
    for start in range(0, 48, 16):
        estimator.update([x[start : start + 16]], [y[start : start + 16]])
    before = estimator.compute().clone()
    distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        estimator.sync()
        torch.testing.assert_close(estimator.compute(), before)
        assert estimator.batch_hsic().shape == (3, 2, 2)
        with pytest.raises(RuntimeError, match="after sync"):
            estimator.update([x[:16]], [y[:16]])
    finally:
        distributed.destroy_process_group()


def _sync_worker(rank: int, world_size: int, rendezvous: str, results) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size
    )
    try:
        x, y = related_features(n=96)
        estimator = MinibatchCKA(1, 1, keep_batch_terms=True)
        # Rank 0 sees batches 0 and 2, rank 1 batch 1 and a 3-example tail (skipped).
        for start in range(rank * 16, 96, 32):
            estimator.update([x[start : start + 16]], [y[start : start + 16]])
        if rank == 1:
            estimator.update([x[:3]], [y[:3]])
        estimator.sync()
        results.put(
            (
                rank,
                float(estimator.compute()),
                estimator.n_examples,
                estimator.skipped_examples,
                tuple(estimator.batch_hsic().shape),
            )  # fmt: skip
        )
    finally:
        torch.distributed.destroy_process_group()


def test_sync_across_two_processes_equals_one_process(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    import multiprocessing

    x, y = related_features(n=96)
    single = MinibatchCKA(1, 1)
    for start in range(0, 96, 16):
        single.update([x[start : start + 16]], [y[start : start + 16]])
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_sync_worker, args=(rank, 2, str(tmp_path / "rv"), results))
        for rank in range(2)
    ]
    for worker in workers:
        worker.start()
    outcome = sorted(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    for _, value, n_examples, skipped, terms_shape in outcome:
        assert value == pytest.approx(float(single.compute()), abs=1e-12)
        assert (n_examples, skipped, terms_shape) == (96, 3, (6, 2, 2))


# ---- CKA between models over a loader (model_cka) ---------------------------------

from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from transferlens.analysis import cka, cka_many, cka_matrix  # noqa: E402
from transferlens.analysis.stats import resample_indices  # noqa: E402

LAYERS = ["conv1", "layer1", "layer2"]


class SmallNet(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.layer2 = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return self.fc(self.layer2(self.layer1(self.conv1(x))).mean(dim=(2, 3)))


def image_loader(n: int = 96, batch_size: int = 16) -> DataLoader:
    g = generator(8)
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.zeros(n, dtype=torch.long))
    return DataLoader(data, batch_size=batch_size)


def layer_outputs(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        conv1 = model.conv1(images)
        layer1 = model.layer1(conv1)
        return [conv1, layer1, model.layer2(layer1)]


def test_a_model_and_its_copy_have_cka_one_at_every_layer():
    import copy

    model = SmallNet(0)
    result = cka(model, copy.deepcopy(model), image_loader(), layers=LAYERS, n_bootstrap=50)
    frame = result.to_frame()
    assert list(frame.columns) == ["pair", "layer", "cka", "cka_low", "cka_high", "cka_p"]
    assert frame["cka_p"].isna().all()  # no permutations drawn by default
    assert list(frame["layer"]) == LAYERS and set(frame["pair"]) == {"a-b"}
    np.testing.assert_allclose(frame[["cka", "cka_low", "cka_high"]].to_numpy(), 1.0, atol=1e-6)


def test_pairs_match_the_batchwise_reference_and_same_names_are_averaged():
    models = {f"m{i}": SmallNet(i) for i in range(3)}
    pairs = [("X", "m0", "m1"), ("X", "m0", "m2"), ("Y", "m1", "m2")]
    result = cka_many(models, image_loader(), layers=LAYERS, pairs=pairs, n_bootstrap=200, seed=3)
    images = torch.cat([x for x, _ in image_loader()])
    outputs = {key: layer_outputs(model.eval(), images) for key, model in models.items()}
    expected = {
        (a, b): np.diagonal(minibatch_reference(outputs[a], outputs[b], 16)) for _, a, b in pairs
    }
    per_combination = result.to_frame(combine=False)
    assert list(per_combination.columns[:4]) == ["pair", "model_a", "model_b", "layer"]
    for _, a, b in pairs:
        rows = per_combination[(per_combination.model_a == a) & (per_combination.model_b == b)]
        np.testing.assert_allclose(rows["cka"], expected[(a, b)], atol=1e-5)
    combined = result.to_frame().set_index(["pair", "layer"])
    mean_x = (expected[("m0", "m1")] + expected[("m0", "m2")]) / 2
    np.testing.assert_allclose(combined.loc["X", "cka"], mean_x, atol=1e-5)
    np.testing.assert_allclose(combined.loc["Y", "cka"], expected[("m1", "m2")], atol=1e-5)
    assert (combined["cka_low"] <= combined["cka_high"]).all()
    assert [m.forwards for m in models.values()] == [6, 6, 6]  # 6 batches, one forward each
    assert (result.n_examples, result.n_batches, result.skipped_examples) == (96, 6, 0)


def test_the_interval_is_a_bootstrap_over_batches():
    model_a, model_b = SmallNet(0), SmallNet(1)
    result = cka(model_a, model_b, image_loader(), layers=["layer1"], n_bootstrap=300, seed=7)
    images = torch.cat([x for x, _ in image_loader()])
    x = layer_outputs(model_a.eval(), images)[1].double().flatten(1)
    y = layer_outputs(model_b.eval(), images)[1].double().flatten(1)
    batches = [slice(s, s + 16) for s in range(0, 96, 16)]
    terms = np.array(
        [
            [
                float(hsic_unbiased(linear_gram(u[b]), linear_gram(v[b])))
                for u, v in ((x, y), (x, x), (y, y))
            ]
            for b in batches
        ]
    )
    sums = terms[resample_indices(len(batches), 300, seed=7)].sum(axis=1)
    replicates = sums[:, 0] / np.sqrt(sums[:, 1] * sums[:, 2])
    expected_low, expected_high = np.quantile(replicates, [0.025, 0.975])
    row = result.to_frame().iloc[0]
    assert row["cka_low"] == pytest.approx(expected_low, abs=1e-6)
    assert row["cka_high"] == pytest.approx(expected_high, abs=1e-6)
    assert row["cka_low"] < row["cka"] < row["cka_high"]


def test_cka_matrix_of_a_model_with_itself():
    model = SmallNet(0)
    result = cka_matrix(model, model, image_loader(), LAYERS, ["layer2", "layer1"], n_bootstrap=20)
    assert model.forwards == 6  # the same model is run once per batch
    assert result.matrix.shape == (3, 2)
    assert result.matrix[2, 0] == pytest.approx(1.0, abs=1e-9)
    assert result.matrix[1, 1] == pytest.approx(1.0, abs=1e-9)
    outputs = layer_outputs(model.eval(), torch.cat([x for x, _ in image_loader()]))
    expected = minibatch_reference(outputs, [outputs[2], outputs[1]], 16)
    np.testing.assert_allclose(result.matrix, expected, atol=1e-5)
    assert result.matrix[0, 0] < 0.99
    frame = result.to_frame()
    assert list(frame.columns) == [
        "pair",
        "layer_a",
        "layer_b",
        "cka",
        "cka_low",
        "cka_high",
        "cka_p",
    ]
    assert len(frame) == 6


def test_without_bootstrap_or_with_one_batch_the_interval_is_nan():
    model_a, model_b = SmallNet(0), SmallNet(1)
    no_bootstrap = cka(model_a, model_b, image_loader(), layers=LAYERS, n_bootstrap=0).to_frame()
    one_batch = cka(model_a, model_b, image_loader(18, 16), layers=LAYERS, n_bootstrap=10)
    assert no_bootstrap["cka_low"].isna().all() and no_bootstrap["cka"].notna().all()
    assert one_batch.to_frame()["cka_high"].isna().all()
    assert one_batch.skipped_examples == 2 and one_batch.n_examples == 16


def test_cka_input_errors_name_the_culprit():
    models = {"m0": SmallNet(0), "m1": SmallNet(1)}
    with pytest.raises(UserInputError, match="unknown model 'm9'"):
        cka_many(models, image_loader(), layers=LAYERS, pairs=[("X", "m0", "m9")])
    with pytest.raises(UserInputError, match="unknown layer 'layer3'"):
        cka_many(models, image_loader(), layers=["layer3"])
    with pytest.raises(UserInputError, match="n_bootstrap"):
        cka_many(models, image_loader(), layers=LAYERS, n_bootstrap=-1)
    with pytest.raises(UserInputError, match="n_bootstrap"):
        cka(models["m0"], models["m1"], image_loader(), layers=LAYERS, n_bootstrap=1.5)
    # One call shape per function: a mapping belongs to cka_many, two models to cka.
    with pytest.raises(UserInputError, match="cka_many"):
        cka(models, models["m1"], image_loader())
    with pytest.raises(UserInputError, match=r"cka\(model_a, model_b, loader\)"):
        cka_many(models["m0"], image_loader())


def test_cka_of_two_models_is_cka_many_of_the_pair_and_records_its_settings():
    model_a, model_b = SmallNet(0), SmallNet(1)
    two = cka(model_a, model_b, image_loader(), layers=LAYERS, n_bootstrap=40, seed=2)
    many = cka_many(
        {"a": model_a, "b": model_b}, image_loader(), layers=LAYERS, n_bootstrap=40, seed=2
    )
    assert two.to_frame().equals(many.to_frame())
    assert two.pairs == (("a-b", "a", "b"),) and two.layers_a == tuple(LAYERS)
    assert two.settings == {
        "n_bootstrap": 40,
        "confidence": 0.95,
        "seed": 2,
        "tokens": "all",
        "n_permutations": 0,
    }


def test_the_public_name_analysis_cka_is_the_function_even_after_importing_every_module():
    import importlib
    import pkgutil

    import transferlens.analysis as analysis

    for module in pkgutil.iter_modules(analysis.__path__):
        importlib.import_module(f"transferlens.analysis.{module.name}")
    assert analysis.cka is cka and analysis.cka_many is cka_many
    # Every name of __all__ is importable and no module shadows an exported name.
    assert all(hasattr(analysis, name) for name in analysis.__all__)
    modules = {module.name for module in pkgutil.iter_modules(analysis.__path__)}
    assert not modules & set(analysis.__all__)
    model = SmallNet(0)
    frame = analysis.cka(model, model, image_loader(), layers=["conv1"], n_bootstrap=0).to_frame()
    assert frame["cka"].tolist() == pytest.approx([1.0], abs=1e-9)


# ---- the formula functions (their fast kernels: test_kernels.py) -------------------


@pytest.mark.parametrize("n", [5, 127, 128, 300])
def test_gram_is_the_exactly_symmetric_product(n):
    from transferlens.analysis.cka_estimators import gram_linear_reference

    x = torch.randn(n, 37, generator=generator(n))
    for features, tolerance in [(x, 1e-5), (x.double(), 1e-12)]:
        gram = gram_linear(features)
        assert gram.dtype == features.dtype and torch.equal(gram, gram.T)
        reference = gram_linear_reference(x.double())
        torch.testing.assert_close(gram.double(), reference, rtol=tolerance, atol=tolerance)


def test_hsic_is_the_papers_estimators():
    from transferlens.analysis.cka_estimators import hsic

    x, y = related_features(n=30)
    K, L = linear_gram(x), linear_gram(torch.tanh(y))
    torch.testing.assert_close(hsic(K, L), hsic_biased(K, L), rtol=1e-12, atol=0)
    torch.testing.assert_close(hsic(K, L, unbiased=True), hsic_unbiased(K, L), rtol=1e-10, atol=0)


def test_minibatch_cka_sums_the_hsic_1_of_each_batch_s_shifted_grams():
    from transferlens.analysis.cka_estimators import hsic, shifted_gram_reference

    x, y = related_features(n=48)
    z = (torch.relu(y[:, :30]) + 10).float().reshape(48, 5, 3, 2)  # float32, [n, C, H, W]
    estimator = MinibatchCKA(2, 1)
    expected = torch.zeros(3, 3, dtype=torch.float64)
    for start in range(0, 48, 16):
        batch = [x[start : start + 16], z[start : start + 16], y[start : start + 16]]
        estimator.update(batch[:2], batch[2:])
        grams = [shifted_gram_reference(features) for features in batch]
        expected += torch.tensor([[hsic(a, b, unbiased=True) for b in grams] for a in grams])
    torch.testing.assert_close(estimator.hsic_sum, expected, rtol=1e-5, atol=1e-8)
