"""check_ordered_loader: the analyses that pair example i of two models refuse a loader
that draws its examples in a random order, with one line naming the analysis."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, TensorDataset

from transferlens.analysis.checks import check_ordered_loader
from transferlens.errors import UserInputError

DATA = TensorDataset(torch.arange(10.0).unsqueeze(1), torch.zeros(10, dtype=torch.long))


class _Stream(IterableDataset):
    def __iter__(self):
        yield from DATA


def test_sequential_loaders_lists_and_streams_pass() -> None:
    check_ordered_loader(DataLoader(DATA, batch_size=3), "cka")
    check_ordered_loader([(torch.zeros(2, 1), torch.zeros(2))], "cka")
    check_ordered_loader(DataLoader(_Stream(), batch_size=3), "cka")


@pytest.mark.parametrize(
    "loader",
    [
        DataLoader(DATA, batch_size=3, shuffle=True),
        DataLoader(DATA, batch_size=3, sampler=RandomSampler(DATA, num_samples=10)),
    ],
)
def test_shuffling_loaders_are_refused_in_one_line(loader: DataLoader) -> None:
    with pytest.raises(UserInputError) as error:
        check_ordered_loader(loader, "mistakes")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("mistakes: the loader draws examples in a random order")
    assert "RandomSampler" in message and "shuffle=False" in message


def test_deterministic_samplers_pass() -> None:
    from transferlens.evaluation import ShardSampler

    check_ordered_loader(DataLoader(DATA, sampler=ShardSampler(DATA), batch_size=4), "cka")
    check_ordered_loader(DataLoader(DATA, sampler=ShardSampler(DATA, 1, 2), batch_size=4), "cka")
