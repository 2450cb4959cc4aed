"""The mistakes analysis refuses streams that do not cover the same examples in one order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferlens.analysis.model_mistakes import (
    Predictions,
    correctness,
    error_consistency,
    mistakes,
)
from transferlens.errors import UserInputError

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1])
PRED_A = np.array([0, 1, 2, 1, 1, 2, 0, 0])  # right on 0, 1, 2, 4, 5, 6
PRED_B = np.array([0, 2, 2, 0, 1, 0, 0, 1])  # right on 0, 2, 3, 4, 6, 7


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_shuffling_loader_is_refused_by_every_function_that_takes_one():
    data = TensorDataset(torch.randn(8, 3), torch.from_numpy(LABELS))
    shuffled = DataLoader(data, batch_size=4, shuffle=True)
    model = nn.Linear(3, 3)
    with pytest.raises(UserInputError, match="mistakes: the loader draws examples") as error:
        mistakes({"a": model, "b": nn.Linear(3, 3)}, loader=shuffled, n_bootstrap=0)
    assert "shuffle=False" in one_line(error)
    with pytest.raises(UserInputError, match="correctness: the loader draws examples") as error:
        correctness(model, shuffled)
    one_line(error)
    ordered = DataLoader(data, batch_size=4)  # the same data in order is accepted
    assert correctness(model, ordered).shape == (8,)


def test_correctness_vectors_of_different_lengths_name_both_models():
    with pytest.raises(UserInputError) as error:
        mistakes({"PT0": np.ones(8, bool), "RIT0": np.ones(7, bool)}, n_bootstrap=0)
    message = one_line(error)
    assert "'PT0' has 8 examples but 'RIT0' has 7" in message and "same order" in message
    with pytest.raises(UserInputError) as error:
        error_consistency(np.ones(8, bool), np.ones(7, bool))
    assert "correct_a and correct_b differ in length (8 vs 7" in one_line(error)
    with pytest.raises(UserInputError, match="'a' has no examples"):
        mistakes({"a": [], "b": []}, n_bootstrap=0)


def test_predictions_with_labels_are_scored_and_their_labels_compared():
    result = mistakes(
        {"a": Predictions(PRED_A, LABELS), "b": Predictions(torch.from_numpy(PRED_B), LABELS)},
        n_bootstrap=0,
    )
    expected = mistakes({"a": PRED_A == LABELS, "b": PRED_B == LABELS}, n_bootstrap=0)
    assert result.to_frame().equals(expected.to_frame())
    np.testing.assert_array_equal(result.labels, LABELS)  # per-class counts work
    assert result.per_class_frame()["n"].tolist() == [3, 3, 2]
    # Scores [n, C]: top-1 is the argmax.
    scores = np.eye(3)[PRED_A]
    again = mistakes({"a": Predictions(scores, LABELS), "b": Predictions(PRED_B, LABELS)})
    assert again.combinations[0].kappa == result.combinations[0].kappa


def test_predictions_scored_against_different_labels_are_refused():
    shifted = np.roll(LABELS, 1)  # the same classes in another order: other examples
    with pytest.raises(UserInputError) as error:
        mistakes(
            {"PT0": Predictions(PRED_A, LABELS), "RIT1": Predictions(PRED_B, shifted)},
            n_bootstrap=0,
        )
    message = one_line(error)
    assert "'PT0' and 'RIT1' were scored against different labels" in message
    assert "8 of 8 examples, first at index 0" in message
    with pytest.raises(UserInputError, match="'a' has 8 examples but 'b' has 7"):
        mistakes(
            {"a": Predictions(PRED_A, LABELS), "b": Predictions(PRED_B[:7], LABELS[:7])},
            n_bootstrap=0,
        )
    with pytest.raises(UserInputError, match="b: 8 predictions but 7 labels"):
        mistakes({"a": Predictions(PRED_A, LABELS), "b": Predictions(PRED_B, LABELS[:7])})


def test_models_and_vectors_are_not_mixed():
    with pytest.raises(UserInputError, match="either models") as error:
        mistakes({"a": nn.Linear(3, 3), "b": np.ones(8, bool)}, n_bootstrap=0)
    one_line(error)
