"""Shared test settings and fixtures: one thread (CI has 2 cores), offline hubs, the
shared data folder, and one tiny study for every test that needs a study file."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

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


# A study that trains in seconds on embedded synthetic data: one source, one target, one
# seed, no sweeps and no analyses (tests add what they need through ``changes``).
TINY_STUDY: dict[str, Any] = {
    "name": "tiny",
    "model": {"name": "fixup_resnet10", "kwargs": {"stem": "cifar", "width": 4}},
    "data_defaults": {"name": "synthetic", "image_size": 8, "train_size": 32, "test_size": 16},
    "source": {"data": {"domain": "source"}},
    "targets": [{"label": "real", "data": {"domain": "real"}}],
    "training": {
        "pretrain": {"epochs": 2, "lr": 0.05, "batch_size": 16},
        "pt": {"epochs": 1, "lr": 0.02, "batch_size": 16},
        "rit": {"epochs": 1, "lr": 0.05, "batch_size": 16},
    },
    "seeds": [0],
}


@pytest.fixture(scope="session")
def tiny_study() -> Callable[..., dict[str, Any]]:
    """``tiny_study(**changes)``: a fresh copy of :data:`TINY_STUDY` with top-level keys
    replaced, e.g. ``tiny_study(seeds=[0, 1], analyses={"cka": {}})``."""

    def make(**changes: Any) -> dict[str, Any]:
        return {**copy.deepcopy(TINY_STUDY), **copy.deepcopy(changes)}

    return make


@pytest.fixture
def study_file(tmp_path: Path, tiny_study: Callable[..., dict[str, Any]]) -> Callable[..., Path]:
    """``study_file(study=None, name="study.yaml", **changes)``: ``study`` (default:
    ``tiny_study(**changes)``) written as YAML into the test's folder; returns its path."""

    def write(
        study: dict[str, Any] | None = None, name: str = "study.yaml", **changes: Any
    ) -> Path:
        path = tmp_path / name
        content = tiny_study(**changes) if study is None else study
        path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        return path

    return write
