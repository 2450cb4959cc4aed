"""Common/uncommon mistakes: 2x2 tables, Cohen's kappa, its degenerate cases and intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis.model_mistakes import (
    CELLS,
    correctness,
    error_consistency,
    kappa_from_counts,
    mistakes,
)
from transferlens.analysis.stats import resample_indices
from transferlens.errors import UserInputError

# A hand-made pair over 10 examples:
#   a: R R R R R R W W W R      b: R R R R W W W W R R
# both_right = 5 (0-3, 9), both_wrong = 2 (6, 7), only_first_wrong = 1 (8),
# only_second_wrong = 2 (4, 5). p_o = 7/10, p_a = 7/10, p_b = 6/10,
# p_e = 0.7*0.6 + 0.3*0.4 = 0.54, kappa = (0.7 - 0.54) / (1 - 0.54) = 0.16 / 0.46.
A = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 1], dtype=bool)
B = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1], dtype=bool)


def test_kappa_matches_the_hand_computed_table():
    assert error_consistency(A, B) == pytest.approx(0.16 / 0.46, abs=1e-12)
    result = mistakes({"a": A, "b": B}, n_bootstrap=0)
    row = result.to_frame().iloc[0]
    assert row["pair"] == "a-b" and row["n"] == 10
    assert [row[cell] for cell in CELLS] == [5, 2, 1, 2]
    assert row["kappa"] == pytest.approx(0.16 / 0.46, abs=1e-12)
    assert np.isnan(row["kappa_low"])
    np.testing.assert_array_equal(result.indices("a-b", "both_wrong"), [6, 7])
    np.testing.assert_array_equal(result.indices("a-b", "only_first_wrong"), [8])
    np.testing.assert_array_equal(result.indices("a-b", "only_second_wrong"), [4, 5])


def test_kappa_agrees_with_scikit_learn_on_random_vectors():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.random(200) < rng.uniform(0.2, 0.9)
        b = np.where(rng.random(200) < 0.7, a, rng.random(200) < 0.5)
        assert error_consistency(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_identical_vectors_have_kappa_one_and_the_degenerate_rule():
    assert error_consistency(A, A) == 1.0
    all_right, all_wrong = np.ones(8, bool), np.zeros(8, bool)
    # p_e = 1: both right everywhere, or both wrong everywhere -> identical -> 1.
    assert error_consistency(all_right, all_right) == 1.0
    assert error_consistency(all_wrong, all_wrong) == 1.0
    # One always right, the other always wrong: p_e = 0, p_o = 0 -> 0.
    assert error_consistency(all_right, all_wrong) == 0.0
    # One constant: p_o = p_e -> 0, not NaN.
    assert error_consistency(all_right, B[:8]) == 0.0
    # The rule on counts: identical degenerate table is 1; disagreement with p_e = 1 cannot occur.
    np.testing.assert_array_equal(kappa_from_counts(np.array([[9, 0, 0, 0], [0, 9, 0, 0]])), [1, 1])


def test_correctness_vectors_are_validated():
    assert error_consistency(
        [1, 0, 1, 1], torch.tensor([True, False, False, True])
    ) == pytest.approx(cohen_kappa_score([1, 0, 1, 1], [1, 0, 0, 1]))
    with pytest.raises(UserInputError, match="length"):
        error_consistency(A, B[:5])
    with pytest.raises(UserInputError, match="0/1"):
        error_consistency([0, 2, 1], [0, 1, 1])
    with pytest.raises(UserInputError, match="empty"):
        error_consistency([], [])
    with pytest.raises(UserInputError, match="1-D"):
        error_consistency(np.ones((2, 2)), np.ones((2, 2)))


def test_bootstrap_interval_resamples_examples():
    rng = np.random.default_rng(1)
    a = rng.random(300) < 0.7
    b = np.where(rng.random(300) < 0.6, a, rng.random(300) < 0.7)
    result = mistakes({"a": a, "b": b}, n_bootstrap=400, seed=5)
    replicates = [cohen_kappa_score(a[idx], b[idx]) for idx in resample_indices(300, 400, seed=5)]
    expected = np.quantile(replicates, [0.025, 0.975])
    row = result.to_frame().iloc[0]
    assert (row["kappa_low"], row["kappa_high"]) == pytest.approx(tuple(expected), abs=1e-12)
    assert row["kappa_low"] < row["kappa"] < row["kappa_high"]
    again = mistakes({"a": a, "b": b}, n_bootstrap=400, seed=5).to_frame().iloc[0]
    assert again["kappa_low"] == row["kappa_low"]


def test_pairs_with_one_name_are_averaged_and_kept_per_combination():
    rng = np.random.default_rng(2)
    vectors = {key: rng.random(100) < 0.6 for key in ("PT0", "PT1", "RIT0", "RIT1")}
    pairs = [("PT-RIT", "PT0", "RIT0"), ("PT-RIT", "PT1", "RIT1"), ("PT-PT", "PT0", "PT1")]
    result = mistakes(vectors, pairs, n_bootstrap=100)
    per_combination = result.to_frame(combine=False)
    assert list(per_combination["first"]) == ["PT0", "PT1", "PT0"]
    combined = result.to_frame().set_index("pair")
    assert list(combined.index) == ["PT-RIT", "PT-PT"]
    kappas = [error_consistency(vectors[a], vectors[b]) for _, a, b in pairs]
    assert combined.loc["PT-RIT", "kappa"] == pytest.approx((kappas[0] + kappas[1]) / 2)
    assert combined.loc["PT-PT", "kappa"] == pytest.approx(kappas[2])
    both_wrong = [(~vectors[a] & ~vectors[b]).sum() for _, a, b in pairs[:2]]
    assert combined.loc["PT-RIT", "both_wrong"] == pytest.approx(np.mean(both_wrong))
    assert list(combined.columns) == [
        "n", "both_right", "both_wrong", "only_first_wrong", "only_second_wrong",
        "kappa", "kappa_low", "kappa_high",
        "kappa_max", "kappa_ratio", "kappa_ratio_low", "kappa_ratio_high",
    ]  # fmt: skip
    with pytest.raises(UserInputError, match="first= and second="):
        result.indices("PT-RIT", "both_wrong")
    picked = result.indices("PT-RIT", "both_wrong", first="PT1", second="RIT1")
    np.testing.assert_array_equal(picked, np.flatnonzero(~vectors["PT1"] & ~vectors["RIT1"]))


def test_per_class_counts_add_up_to_the_table():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
    result = mistakes({"a": A, "b": B}, labels=labels, n_bootstrap=0)
    per_class = result.per_class_frame()
    assert list(per_class["label"]) == [0, 1, 2]
    totals = per_class[list(CELLS)].sum()
    assert list(totals) == [5, 2, 1, 2]
    # Class 2 = examples 5..8: a R W W W, b W W W R -> both_wrong 2, only_first 1, only_second 1.
    assert per_class.set_index("label").loc[2, list(CELLS)].tolist() == [0, 2, 1, 1]
    assert list(per_class["n"]) == [3, 3, 4]
    with pytest.raises(UserInputError, match="labels"):
        mistakes({"a": A, "b": B}, n_bootstrap=0).per_class_frame()


class FixedPredictions(nn.Module):
    """Predicts class ``x[:, column]`` (inputs carry the predictions); counts forwards."""

    def __init__(self, column: int) -> None:
        super().__init__()
        self.column = column
        self.anchor = nn.Parameter(torch.zeros(1))
        self.forwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        return nn.functional.one_hot(x[:, self.column].long(), 3).float() + self.anchor


def test_models_and_a_loader_give_correctness_and_labels():
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    predictions_a = torch.where(torch.from_numpy(A), targets, (targets + 1) % 3)
    predictions_b = torch.where(torch.from_numpy(B), targets, (targets + 2) % 3)
    inputs = torch.stack([predictions_a, predictions_b], dim=1).float()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=4)
    models = {"a": FixedPredictions(0), "b": FixedPredictions(1)}
    np.testing.assert_array_equal(correctness(models["a"], loader), A)
    result = mistakes(models, loader=loader, n_bootstrap=0)
    # 3 batches: "a" ran in both passes, "b" only in the joint one (one forward per batch).
    assert [models[key].forwards for key in models] == [6, 3]
    assert result.to_frame().iloc[0]["kappa"] == pytest.approx(0.16 / 0.46)
    assert result.per_class_frame()["n"].tolist() == [4, 3, 3]
    with pytest.raises(UserInputError, match="loader"):
        mistakes(models)


def test_bad_inputs_name_the_culprit():
    with pytest.raises(UserInputError, match="unknown model 'c'"):
        mistakes({"a": A, "b": B}, [("X", "a", "c")])
    with pytest.raises(UserInputError, match="different lengths"):
        mistakes({"a": A, "b": B[:5]})
    with pytest.raises(UserInputError, match="unknown cell"):
        mistakes({"a": A, "b": B}, n_bootstrap=0).indices("a-b", "both")
    with pytest.raises(UserInputError, match="labels"):
        mistakes({"a": A, "b": B}, labels=[1, 2], n_bootstrap=0)


def test_the_public_name_analysis_mistakes_is_the_function_and_records_its_settings():
    import transferlens.analysis as analysis

    assert analysis.mistakes is mistakes
    result = analysis.mistakes({"a": A, "b": B}, n_bootstrap=20, seed=4)
    assert isinstance(result, analysis.MistakesResult)
    assert result.settings == {"n_bootstrap": 20, "confidence": 0.95, "seed": 4}
    assert result.to_frame().iloc[0]["kappa"] == pytest.approx(0.16 / 0.46, abs=1e-12)


def test_multilabel_targets_count_an_example_right_when_every_label_is():
    logits = torch.tensor([[2.0, -1.0], [2.0, 1.0], [-3.0, -1.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])

    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits[x.long()]

    loader = DataLoader(TensorDataset(torch.arange(3), targets), batch_size=2)
    np.testing.assert_array_equal(correctness(Fixed(), loader), [True, False, True])
