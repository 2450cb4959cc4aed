"""Data sets (one registry, deterministic splits) and the paper's input shuffling."""

from transferlens.data.registry import build_data, dataset_names, register_dataset
from transferlens.data.shuffle import InputShuffle, block_shuffle, make_shuffle, pixel_shuffle
from transferlens.data.spec import DataSpec, DataSplits
from transferlens.data.tensor_dataset import TensorImageDataset

__all__ = [
    "DataSpec",
    "DataSplits",
    "InputShuffle",
    "TensorImageDataset",
    "block_shuffle",
    "build_data",
    "dataset_names",
    "make_shuffle",
    "pixel_shuffle",
    "register_dataset",
]
