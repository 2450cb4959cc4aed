"""Data sets (one registry, deterministic splits) and the paper's input shuffling."""

from transferlens.data.registry import build_data, dataset_names, register_dataset
from transferlens.data.spec import DataSpec, DataSplits

__all__ = ["DataSpec", "DataSplits", "build_data", "dataset_names", "register_dataset"]
