"""The permutation null of minibatch CKA (cka_p), against a float64 reference that draws
the same permutations, and what the study writes from it (cka_pairs, seed intervals)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis import cka, cka_many, cka_matrix
from transferlens.analysis import model_cka as model_cka_module
from transferlens.analysis.cka_estimators import hsic, shifted_gram_reference
from transferlens.analysis.cka_permutation import PERMUTATION_STREAM, linked_rows
from transferlens.analysis.seed_stats import pair_summary
from transferlens.errors import UserInputError
from transferlens.study.analyses.cka import PAIRS_COLUMNS, per_seed_pair, with_seed_intervals
from transferlens.study.analyses.settings import CkaSettings

LAYERS = ["conv1", "layer1", "layer2"]


class SmallNet(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.layer2 = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(self.conv1(x)))


def image_loader(n: int = 60, batch_size: int = 16, shuffle: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(8)
    data = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.zeros(n, dtype=torch.long))
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle)


def outputs(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        conv1 = model.conv1(images)
        layer1 = model.layer1(conv1)
        return [conv1, layer1, model.layer2(layer1)]


def reference_p_values(models, pairs, n_permutations, seed, batch_size=16):
    """float64, from the formulas: per batch, each model's Gram permuted by its own draw
    (the first model's the identity; the draws as cka_permutation makes them), HSIC_1
    summed over batches, CKA with the unpermuted denominators, p = (1 + #>=) / (1 + R)."""
    keys = list(models)
    images = torch.cat([x for x, _ in image_loader()])
    features = {key: outputs(model.eval(), images) for key, model in models.items()}
    rng = np.random.default_rng(np.random.SeedSequence([seed, PERMUTATION_STREAM]))
    observed = {}
    null = {}
    for start in range(0, len(images) - 3, batch_size):
        rows = slice(start, start + batch_size)
        grams = {k: [shifted_gram_reference(f[rows]) for f in features[k]] for k in keys}
        n = grams[keys[0]][0].shape[0]
        if n < 4:
            continue
        orders = rng.permuted(np.tile(np.arange(n), (n_permutations, len(keys) - 1, 1)), axis=-1)
        for a in keys:
            for b in keys:
                for layer in range(3):
                    ka, kb = grams[a][layer], grams[b][layer]
                    observed[a, b, layer] = observed.get((a, b, layer), 0.0) + float(
                        hsic(ka, kb, unbiased=True)
                    )
                    for r in range(n_permutations):
                        pa = np.arange(n) if a == keys[0] else orders[r, keys.index(a) - 1]
                        pb = np.arange(n) if b == keys[0] else orders[r, keys.index(b) - 1]
                        term = float(hsic(ka[pa][:, pa], kb[pb][:, pb], unbiased=True))
                        null.setdefault((a, b, layer), np.zeros(n_permutations))[r] += term
    results = {}
    for _, a, b in pairs:
        for layer in range(3):
            scale = math.sqrt(observed[a, a, layer] * observed[b, b, layer])
            value = observed[a, b, layer] / scale
            draws = null[a, b, layer] / scale
            results[a, b, layer] = (value, draws)
    return results


def test_p_values_match_a_float64_reference_with_the_same_draws():
    models = {f"m{i}": SmallNet(i) for i in range(3)}
    pairs = [("X", "m0", "m1"), ("X", "m0", "m2"), ("Y", "m2", "m1")]
    result = cka_many(
        models, image_loader(), layers=LAYERS, pairs=pairs, n_bootstrap=0, n_permutations=30
    )
    reference = reference_p_values(models, pairs, 30, seed=0)
    per_combination = result.to_frame(combine=False)
    for (_, a, b), p_row in zip(pairs, result.p):
        for layer in range(3):
            value, draws = reference[a, b, layer]
            expected = (1 + np.sum(draws >= value)) / 31
            assert p_row[layer] == pytest.approx(expected, abs=1e-12)
    # The pair name's row: the mean over its combinations, under the same draws.
    for layer in range(3):
        value = np.mean([reference[a, b, layer][0] for _, a, b in pairs[:2]])
        draws = np.mean([reference[a, b, layer][1] for _, a, b in pairs[:2]], axis=0)
        assert result.pair_p[0, layer] == pytest.approx((1 + np.sum(draws >= value)) / 31)
    # Non-trivial: the last layer of unrelated nets is not significant everywhere.
    assert per_combination["cka_p"].max() > 0.1
    assert per_combination["cka_p"].min() == pytest.approx(1 / 31)


def test_a_model_and_its_copy_are_significant_and_the_p_value_never_reaches_zero():
    model = SmallNet(0)
    result = cka(model, copy.deepcopy(model), image_loader(), layers=LAYERS, n_permutations=50)
    np.testing.assert_allclose(result.to_frame()["cka_p"], 1 / 51)
    assert result.settings["n_permutations"] == 50


def test_the_same_seed_gives_the_same_p_values_and_the_bootstrap_is_untouched():
    models = {"a": SmallNet(0), "b": SmallNet(1)}
    first = cka_many(models, image_loader(), layers=LAYERS, n_bootstrap=30, n_permutations=40)
    again = cka_many(models, image_loader(), layers=LAYERS, n_bootstrap=30, n_permutations=40)
    plain = cka_many(models, image_loader(), layers=LAYERS, n_bootstrap=30)
    pd.testing.assert_frame_equal(first.to_frame(), again.to_frame())
    columns = ["pair", "layer", "cka", "cka_low", "cka_high"]
    pd.testing.assert_frame_equal(first.to_frame()[columns], plain.to_frame()[columns])
    assert plain.to_frame()["cka_p"].isna().all()


def test_without_permutations_no_gram_is_kept(monkeypatch):
    kept = []
    original = model_cka_module.MinibatchCKA

    def recording(*args, **kwargs):
        kept.append(kwargs.get("keep_grams"))
        return original(*args, **kwargs)

    monkeypatch.setattr(model_cka_module, "MinibatchCKA", recording)
    cka(SmallNet(0), SmallNet(1), image_loader(), layers=LAYERS, n_bootstrap=5)
    cka(SmallNet(0), SmallNet(1), image_loader(), layers=LAYERS, n_bootstrap=5, n_permutations=3)
    assert kept == [False, True]


def test_cka_matrix_permutes_the_two_sides_apart_even_for_one_model():
    model = SmallNet(0)
    result = cka_matrix(model, model, image_loader(), LAYERS, LAYERS, n_permutations=20)
    p = result.to_frame()["cka_p"].to_numpy().reshape(3, 3)
    np.testing.assert_allclose(np.diagonal(p), 1 / 21)  # CKA 1 with itself: never reached
    assert np.isfinite(p).all()


def test_linked_rows_are_the_layers_for_cka_many_and_everything_for_a_matrix():
    select = np.array([[(0, 3), (1, 4), (2, 5)], [(3, 6), (4, 7), (5, 8)]])
    assert sorted(map(list, linked_rows(select, 9))) == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    matrix = np.array([[[(i, 2 + j) for j in range(2)] for i in range(2)]])
    assert [list(rows) for rows in linked_rows(matrix, 4)] == [[0, 1, 2, 3]]


def test_a_shuffling_loader_is_refused_in_one_line():
    models = {"a": SmallNet(0), "b": SmallNet(1)}
    with pytest.raises(UserInputError, match=r"^cka: the loader draws examples in a random order"):
        cka_many(models, image_loader(shuffle=True), layers=LAYERS)
    with pytest.raises(UserInputError, match="^cka: "):
        cka(models["a"], models["b"], image_loader(shuffle=True), layers=LAYERS)
    with pytest.raises(UserInputError, match="^cka: "):
        cka_matrix(models["a"], models["b"], image_loader(shuffle=True), LAYERS, LAYERS)
    with pytest.raises(UserInputError, match="n_permutations"):
        cka_many(models, image_loader(), layers=LAYERS, n_permutations=-1)


def test_the_study_tables_per_seed_pair_and_the_interval_across_seed_pairs():
    models = {"P": SmallNet(9), "pt0": SmallNet(0), "pt1": SmallNet(1), "pt2": SmallNet(2)}
    pairs = [("PT-PT", "pt0", "pt1"), ("PT-PT", "pt0", "pt2"), ("PT-PT", "pt1", "pt2")]
    pairs += [("PT-P", f"pt{i}", "P") for i in range(3)]
    result = cka_many(models, image_loader(), layers=LAYERS, pairs=pairs, n_bootstrap=10)
    seeds = {"P": None, "pt0": 0, "pt1": 1, "pt2": 2}
    rows = per_seed_pair(result.to_frame(combine=False), seeds)
    assert tuple(rows.columns) == PAIRS_COLUMNS[1:]
    assert rows["second_seed"].isna().sum() == 9  # P has no seed: 3 PT-P pairs x 3 layers
    assert list(rows["first_seed"].iloc[:3]) == [0, 0, 0]
    table = with_seed_intervals(result.to_frame(), rows)
    assert list(table.columns) == [
        *["pair", "layer", "cka", "cka_low", "cka_high", "cka_p"],
        *["cka_seeds_low", "cka_seeds_high", "n_pairs"],
    ]
    pd.testing.assert_series_equal(table["cka"], result.to_frame()["cka"])  # untouched
    expected = pair_summary(rows, "cka", by=["pair", "layer"])
    np.testing.assert_allclose(table["cka_seeds_low"], expected["cka_seeds_low"])
    assert (table["n_pairs"] == 3).all()
    assert (table["cka_seeds_low"] < table["cka"]).all()  # three seeds: a spread
    assert (table["cka"] < table["cka_seeds_high"]).all()


def test_the_setting_defaults_to_100_draws_and_takes_0():
    assert CkaSettings().n_permutations == 100
    assert CkaSettings(n_permutations=0).n_permutations == 0
    with pytest.raises(ValueError):
        CkaSettings(n_permutations=-1)
