"""The layer-by-layer CKA matrix's intervals: over batches (the bootstrap of the per-layer
table, same resamples) and across seed pairs (``cka_matrix.csv``, ``cka_matrix_pairs.csv``)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import cka_many, cka_matrix
from transferlens.analysis.cka_bootstrap import cka_replicates, estimate
from transferlens.analysis.cka_estimators import MinibatchCKA
from transferlens.analysis.cka_result import CKAResult
from transferlens.analysis.seed_stats import pair_summary
from transferlens.analysis.stats import resample_indices
from transferlens.models.module_map import module_map
from transferlens.study.analyses.cka import (
    MATRIX_PAIRS,
    MATRIX_PAIRS_COLUMNS,
    analyse_cka,
    matrix_tables,
)
from transferlens.study.analyses.context import TargetModels
from transferlens.study.analyses.settings import CkaSettings

LAYERS = ["conv1", "layer1", "layer2"]


def hsic_1(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased HSIC of Song et al. (2012) of two feature matrices, as written, in float64."""
    K, L = x @ x.T, y @ y.T
    n = K.shape[0]
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return float(
        np.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def random_batches(n_batches: int = 9, rows: int = 10, features: int = 3, seed: int = 0):
    """Per batch, T = 6 feature matrices (3 "models" x 2 "layers"), correlated so CKA is
    away from 0 and 1."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        base = rng.normal(size=(rows, features))
        batches.append([base + rng.normal(scale=s, size=base.shape) for s in (0.5, 1, 2) * 2])
    return batches


# Three "models" (rows 0-1, 2-3, 4-5 of the HSIC), each with two layers; pair names
# X (two combinations) and Y (one).
COMBOS = [(0, 1), (0, 2), (1, 2)]
PAIR_OF = [0, 0, 1]
SELECT = np.array(
    [[[(2 * a + i, 2 * b + j) for j in range(2)] for i in range(2)] for a, b in COMBOS]
)


def accumulated(batches) -> MinibatchCKA:
    accumulator = MinibatchCKA(6, keep_batch_terms=True)
    for features in batches:
        accumulator.update([torch.from_numpy(x) for x in features])
    return accumulator


def brute_force_replicate(batches, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The matrices of one resample of batches, from the drawn batches' HSIC (float64)."""
    sums = np.zeros((6, 6))
    for b in idx:
        sums += [[hsic_1(x, y) for y in batches[b]] for x in batches[b]]
    combos = np.array(
        [
            [[sums[i, j] / np.sqrt(sums[i, i] * sums[j, j]) for i, j in row] for row in cells]
            for cells in SELECT
        ]
    )
    return combos, np.stack([combos[:2].mean(axis=0), combos[2]])


def test_matrix_intervals_equal_a_brute_force_float64_bootstrap_over_batches():
    batches = random_batches()
    result = estimate(accumulated(batches), SELECT, PAIR_OF, 2, 200, 0.95, 5)
    indices = resample_indices(len(batches), 200, seed=5)
    replicates = [brute_force_replicate(batches, idx) for idx in indices]
    combos = np.stack([combo for combo, _ in replicates])
    pairs = np.stack([pair for _, pair in replicates])
    low, high = np.quantile(combos, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(result["low"], low, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["high"], high, rtol=0, atol=1e-12)
    low, high = np.quantile(pairs, [0.025, 0.975], axis=0)
    np.testing.assert_allclose(result["pair_low"], low, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["pair_high"], high, rtol=0, atol=1e-12)
    point, point_pairs = brute_force_replicate(batches, np.arange(len(batches)))
    np.testing.assert_allclose(result["values"], point, rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["pair_values"], point_pairs, rtol=0, atol=1e-12)


def test_the_identity_resample_reproduces_the_point_values():
    accumulator = accumulated(random_batches())
    result = estimate(accumulator, SELECT, PAIR_OF, 2, 50, 0.95, 0)
    identity = np.arange(accumulator.n_batches)[None, :]
    combos, pairs = cka_replicates(accumulator.batch_hsic().numpy(), identity, SELECT, PAIR_OF, 2)
    np.testing.assert_allclose(combos[0], result["values"], rtol=1e-13)
    np.testing.assert_allclose(pairs[0], result["pair_values"], rtol=1e-13)


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


def image_loader(n: int = 192, batch_size: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(8)
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.zeros(n, dtype=torch.long))
    return DataLoader(data, batch_size=batch_size)


def test_cka_many_matrices_share_the_pass_and_the_resamples_of_the_layer_table():
    models = {f"m{i}": SmallNet(i) for i in range(3)}
    pairs = [("X", "m0", "m1"), ("X", "m0", "m2"), ("Y", "m1", "m2")]
    result = cka_many(models, image_loader(), layers=LAYERS, pairs=pairs, n_bootstrap=300, seed=2,
                      matrices=True)  # fmt: skip
    assert [model.forwards for model in models.values()] == [12, 12, 12]  # one pass
    matrices = result.matrices
    assert matrices.kind == "matrix" and matrices.values.shape == (3, 3, 3)
    assert matrices.pair_names == ("X", "Y") and matrices.p is None
    # The diagonal (the same layer on both sides) is the per-layer table, interval too.
    for name in ("values", "low", "high", "pair_values", "pair_low", "pair_high"):
        diagonal = np.diagonal(getattr(matrices, name), axis1=-2, axis2=-1)
        np.testing.assert_allclose(diagonal, getattr(result, name), rtol=0, atol=1e-12)
    for values, low, high in (
        (matrices.values, matrices.low, matrices.high),
        (matrices.pair_values, matrices.pair_low, matrices.pair_high),
    ):
        assert np.all(low <= values) and np.all(values <= high) and np.all(low < high)
    # One combination alone: what cka_matrix gives from its own pass (same batches, seed).
    single = cka_matrix(models["m0"], models["m2"], image_loader(), LAYERS, LAYERS,
                        n_bootstrap=300, seed=2)  # fmt: skip
    for name in ("values", "low", "high"):
        np.testing.assert_allclose(getattr(matrices, name)[1], getattr(single, name)[0], atol=1e-9)
    frame = matrices.to_frame(combine=False)
    assert len(frame) == 3 * 9 and list(frame.columns[:5]) == [
        "pair", "model_a", "model_b", "layer_a", "layer_b",
    ]  # fmt: skip


def hand_made_matrices(layers=("l1", "l2")) -> tuple[CKAResult, dict[str, int | None]]:
    """Seeds 0-2 of PT and RIT, and P: every pair kind's combinations, seeded values."""
    rng = np.random.default_rng(3)
    pt, rit = [f"PT{s}" for s in range(3)], [f"RIT{s}" for s in range(3)]
    combos = [("PT-P", a, "P") for a in pt]
    combos += [("PT-PT", a, b) for a, b in itertools.combinations(pt, 2)]
    combos += [("PT-RIT", a, b) for a in pt for b in rit]
    combos += [("RIT-RIT", a, b) for a, b in itertools.combinations(rit, 2)]
    names = ("PT-P", "PT-PT", "PT-RIT", "RIT-RIT")
    values = rng.uniform(0.2, 0.9, size=(len(combos), len(layers), len(layers)))
    pair_values = np.stack([values[[c[0] == name for c in combos]].mean(axis=0) for name in names])
    result = CKAResult(
        kind="matrix", pairs=tuple(combos), layers_a=layers, layers_b=layers, values=values,
        low=values - 0.1, high=values + 0.1, pair_names=names, pair_values=pair_values,
        pair_low=pair_values - 0.05, pair_high=pair_values + 0.05, n_examples=64, n_batches=4,
        skipped_examples=0, settings={},
    )  # fmt: skip
    seeds = {"P": None, **{f"{arm}{s}": s for arm in ("PT", "RIT") for s in range(3)}}
    return result, seeds


def test_matrix_tables_give_pair_summary_across_seed_pairs():
    result, seeds = hand_made_matrices()
    means, pairs = matrix_tables(result, seeds)
    assert list(pairs.columns) == list(MATRIX_PAIRS_COLUMNS[1:])
    assert list(dict.fromkeys(means["pair"])) == list(MATRIX_PAIRS)  # PT-P left out
    assert list(means.columns) == [
        "pair", "layer_a", "layer_b", "cka", "cka_low", "cka_high", "cka_seeds_low",
        "cka_seeds_high", "n_pairs",
    ]  # fmt: skip
    # The per-seed-pair frame, written out by hand from the combinations.
    rows = []
    for (name, a, b), values in zip(result.pairs, result.values):
        if name == "PT-P":
            continue
        for (i, la), (j, lb) in itertools.product(enumerate(result.layers_a), repeat=2):
            rows.append({"pair": name, "first_seed": seeds[a], "second_seed": seeds[b],
                         "layer_a": la, "layer_b": lb, "cka": values[i, j]})  # fmt: skip
    expected = pair_summary(pd.DataFrame(rows), "cka", by=["pair", "layer_a", "layer_b"])
    merged = means.merge(expected, on=["pair", "layer_a", "layer_b"], suffixes=("", "_expected"))
    assert len(merged) == len(means) == 3 * 4
    for column in ("cka", "cka_seeds_low", "cka_seeds_high", "n_pairs"):
        np.testing.assert_allclose(merged[column], merged[f"{column}_expected"], rtol=1e-12)
    assert set(zip(means["pair"], means["n_pairs"])) == {("PT-PT", 3), ("PT-RIT", 9),
                                                         ("RIT-RIT", 3)}  # fmt: skip
    assert (means["cka_seeds_low"] < means["cka"]).all()
    assert (means["cka"] < means["cka_seeds_high"]).all()
    # The bootstrap interval over batches stays the result's (of the mean over seed pairs).
    at = means[
        (means["pair"] == "PT-RIT") & (means["layer_a"] == "l1") & (means["layer_b"] == "l2")
    ]
    assert float(at["cka_low"].iloc[0]) == result.pair_low[2, 0, 1]
    cell = pairs[(pairs["pair"] == "RIT-RIT") & (pairs["layer_a"] == "l2")]
    cell = cell[cell["layer_b"] == "l1"]
    assert list(cell["first_seed"]) == [0, 0, 1] and list(cell["second_seed"]) == [1, 2, 2]


@dataclasses.dataclass(frozen=True)
class Run:
    run_id: str


class StubContext:
    """What analyse_cka reads of a StudyContext: targets, source, models, loaders."""

    def __init__(self, models: dict[str, nn.Module]) -> None:
        self.models = models
        self.module_map = module_map(models["pt0"])
        self.source = None
        self.targets = {"t": TargetModels("t", pt={0: Run("pt0"), 1: Run("pt1")})}
        self.targets["t"].rit = {0: Run("rit0"), 1: Run("rit1")}

    def member_model(self, member: Run) -> nn.Module:
        return self.models[member.run_id]

    def test_loader(self, target: str, max_examples: int | None = None) -> DataLoader:
        return image_loader(64)


def test_the_study_writes_every_seed_pair_of_the_matrix_with_both_intervals():
    models = {key: SmallNet(seed) for seed, key in enumerate(["pt0", "pt1", "rit0", "rit1"])}
    tables = analyse_cka(StubContext(models), CkaSettings(layers=LAYERS, n_bootstrap=50))
    matrix, pairs = tables["cka_matrix"], tables["cka_matrix_pairs"]
    assert list(pairs.columns) == list(MATRIX_PAIRS_COLUMNS)
    assert list(dict.fromkeys(matrix["pair"])) == list(MATRIX_PAIRS)
    assert dict(zip(matrix["pair"], matrix["n_pairs"])) == {"PT-PT": 1, "RIT-RIT": 1, "PT-RIT": 4}
    assert len(pairs) == (1 + 1 + 4) * 9 and matrix["cka_low"].notna().all()
    assert (matrix["cka_low"] <= matrix["cka"]).all() and (
        matrix["cka"] <= matrix["cka_high"]
    ).all()
    # Two seeds: PT-RIT has a spread across its four seed pairs; PT-PT's one pair has none.
    rit = matrix[matrix["pair"] == "PT-RIT"]
    assert rit["cka_seeds_low"].notna().all()
    assert matrix[matrix["pair"] == "PT-PT"]["cka_seeds_low"].isna().all()
    # Each cell's mean is the mean of its seed pairs; the diagonal is cka.csv's row.
    mean = pairs.groupby(["pair", "layer_a", "layer_b"], sort=False)["cka"].mean()
    indexed = matrix.set_index(["pair", "layer_a", "layer_b"])["cka"]
    np.testing.assert_allclose(indexed.loc[mean.index], mean, rtol=1e-12)
    cka = tables["cka"].set_index(["pair", "layer"])
    for layer in LAYERS:
        row = matrix[(matrix["layer_a"] == layer) & (matrix["layer_b"] == layer)]
        for pair, value, low in zip(row["pair"], row["cka"], row["cka_low"]):
            assert value == cka.loc[(pair, layer), "cka"]
            assert low == cka.loc[(pair, layer), "cka_low"]
