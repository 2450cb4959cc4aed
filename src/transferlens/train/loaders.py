"""Data loaders of a training run, with every random stream tied to the run seed.

* Training order: ``DistributedSampler(shuffle=True, seed=derive_seed(seed, "order"))``,
  also with one process (``num_replicas=1``), so the permutation of epoch k is a pure
  function of (seed, k) and the same code serves DDP. Call ``set_epoch(k)`` each epoch.
* Worker seeds: the loader's generator, reseeded each epoch by the loop.
* Test and train-eval loaders: data-set order, split across processes without padding
  (:class:`~transferlens.evaluation.ShardSampler`) so that reduced sums are exact.
* ``train_eval_size``: a fixed subset of the training split for the per-epoch
  "train metric in evaluation mode". It depends on the data only (generator seed 0),
  not on the run seed, so runs compared with each other are measured on the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from transferlens.data import DataSplits, build_data
from transferlens.errors import UserInputError
from transferlens.evaluation import ShardSampler
from transferlens.train.seeds import derive_seed, worker_init
from transferlens.train.spec import TrainSpec

TRAIN_EVAL_SUBSET_SEED = 0


@dataclass(frozen=True)
class Loaders:
    """The three loaders of a run and the splits they come from."""

    train: DataLoader
    test: DataLoader
    train_eval: DataLoader | None
    splits: DataSplits

    def __iter__(self):  # (train, test, train_eval, splits), for tuple unpacking
        return iter((self.train, self.test, self.train_eval, self.splits))


def train_eval_subset(dataset: Dataset, size: int | None) -> Dataset:
    """``dataset`` itself, or a fixed random subset of ``size`` examples in index order."""
    total = len(dataset)
    if size is None or size >= total:
        return dataset
    generator = torch.Generator().manual_seed(TRAIN_EVAL_SUBSET_SEED)
    chosen = torch.randperm(total, generator=generator)[:size].sort().values
    return Subset(dataset, chosen.tolist())


def probe(splits: DataSplits) -> None:
    """Read one example of each split, so that a bad data option (a block size that does
    not divide the image) fails before a run folder is written, not at the first batch."""
    with torch.random.fork_rng(devices=[]):  # augmentation draws: leave no trace
        for dataset in (splits.train, splits.test):
            if len(dataset):
                dataset[0]


def per_process_batch(batch_size: int, world_size: int) -> int:
    """The per-process share of the global batch (it must divide evenly)."""
    if batch_size % world_size:
        raise UserInputError(
            f"batch_size: {batch_size} is not divisible by the {world_size} processes"
        )
    return batch_size // world_size


def build_loaders(
    spec: TrainSpec,
    *,
    splits: DataSplits | None = None,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> Loaders:
    """Loaders for ``spec`` (the data is built from ``spec.data`` unless ``splits`` is given).

    Unpacks as ``train_loader, test_loader, train_eval_loader, splits``;
    ``train_eval_loader`` is None when ``spec.train_eval`` is off.
    """
    try:
        if splits is None:
            splits = build_data(spec.data)
        probe(splits)
    except UserInputError as error:
        raise UserInputError(f"data: {error}") from None  # name the spec section at fault
    if len(splits.train) == 0:
        raise UserInputError(f"data: the training split of {spec.data.name!r} is empty")
    workers = spec.num_workers
    common = {
        "num_workers": workers,
        "pin_memory": pin_memory,
        "worker_init_fn": worker_init if workers else None,
    }
    order = DistributedSampler(
        splits.train,
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=derive_seed(spec.seed, "order") % 2**62,
        drop_last=False,
    )
    train_loader = DataLoader(
        splits.train,
        batch_size=per_process_batch(spec.batch_size, world_size),
        sampler=order,
        generator=torch.Generator().manual_seed(derive_seed(spec.seed, "workers")),
        **common,
    )

    def evaluation_loader(dataset: Dataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=spec.eval_batch_size,
            sampler=ShardSampler(dataset, rank, world_size),
            **common,
        )

    train_eval = None
    if spec.train_eval:
        source = splits.train_eval if splits.train_eval is not None else splits.train
        train_eval = evaluation_loader(train_eval_subset(source, spec.train_eval_size))
    return Loaders(
        train=train_loader,
        test=evaluation_loader(splits.test),
        train_eval=train_eval,
        splits=splits,
    )
