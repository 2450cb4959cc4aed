"""Shared test settings and fixtures: one thread (CI has 2 cores), offline hubs, the
shared data folder, and one tiny study for every test that needs a study file."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
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


DELETE = object()  # as a value of :func:`with_setting`: remove the key


def merged(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``changes`` merged in: a dict merges key by key into
    the dict it meets, anything else (a list, a number, None) replaces what it meets,
    e.g. ``merged(TINY_STUDY, training={"pt": {"epochs": 3}})`` changes one epoch count.
    To replace a whole section (``source={"weights": ...}``), splat instead:
    ``{**TINY_STUDY, "source": ...}``."""
    result = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], **value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def with_setting(study: Mapping[str, Any], path: Sequence[str | int], value: Any) -> dict[str, Any]:
    """A deep copy of ``study`` with the value at ``path`` (keys and list indexes) set to
    ``value``, or removed where ``value`` is :data:`DELETE`: one setting changed."""
    result = copy.deepcopy(dict(study))
    node: Any = result
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = copy.deepcopy(value)
    return result


@pytest.fixture(scope="session")
def tiny_study() -> Callable[..., dict[str, Any]]:
    """``tiny_study(**changes)``: a fresh copy of :data:`TINY_STUDY` with top-level keys
    replaced, e.g. ``tiny_study(seeds=[0, 1], analyses={"cka": {}})``."""

    def make(**changes: Any) -> dict[str, Any]:
        return {**copy.deepcopy(TINY_STUDY), **copy.deepcopy(changes)}

    return make


@pytest.fixture
def study_file(tmp_path: Path) -> Callable[..., Path]:
    """``study_file(study=None, name="study.yaml", **changes)``: ``study`` (default:
    :data:`TINY_STUDY`) with its top-level keys in ``changes`` replaced, written as YAML
    into the test's folder; returns its path."""

    def write(
        study: Mapping[str, Any] | None = None, name: str = "study.yaml", **changes: Any
    ) -> Path:
        path = tmp_path / name
        content = {**(TINY_STUDY if study is None else study), **changes}
        path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        return path

    return write


# The smallest criticality an analysis test can ask for (a 2 x 2 grid, a few examples).
TINY_CRITICALITY: dict[str, Any] = {
    "alphas": 2,
    "sigmas": 2,
    "n_noise": 1,
    "max_examples": 16,
    "path_points": 2,
    "path_sigmas": [0.0],
}


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$TRANSFERLENS_CACHE`` for the test, and no ``$TRANSFERLENS_DATA``."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRANSFERLENS_CACHE", str(cache))
    monkeypatch.delenv("TRANSFERLENS_DATA", raising=False)
    return cache
