"""Shared test settings: one thread (CI has 2 cores), offline hubs, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real data tarballs beside the project; skips the test when absent."""
    if not (SHARED_DATA / "cifar10-jpg.tar.gz").exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_data_cache(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for every real-data test of a session: the tarballs extract once."""
    return tmp_path_factory.mktemp("transferlens-cache")
