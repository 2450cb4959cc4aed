"""Files and folders the project writes follow the umask (0644/0755 under 022, 0600/0700 under 077)."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from transferlens.cli import main
from transferlens.data.archives import extract_once
from transferlens.io import (
    append_jsonl,
    atomic_path,
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    make_folder,
    make_temp_folder,
)

# umask -> (file mode, folder mode)
MODES = {0o022: (0o644, 0o755), 0o077: (0o600, 0o700), 0o002: (0o664, 0o775)}


@pytest.fixture(params=sorted(MODES), ids=lambda mask: f"umask{mask:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_io_helpers_follow_the_umask(tmp_path: Path, umask: int) -> None:
    file_mode, folder_mode = MODES[umask]
    base = tmp_path / "out"
    atomic_write_text(base / "a" / "b" / "text.txt", "x")
    atomic_write_bytes(base / "bytes.bin", b"x")
    atomic_write_json(base / "study.json", {"x": 1})
    atomic_save_safetensors({"w": torch.zeros(2)}, base / "checkpoints" / "epoch_0000.safetensors")
    append_jsonl(base / "metrics.jsonl", {"epoch": 0})
    with atomic_path(base / "table.csv") as tmp:
        tmp.write_text("a,b\n")
    files = ["a/b/text.txt", "bytes.bin", "study.json", "checkpoints/epoch_0000.safetensors"]
    for name in [*files, "metrics.jsonl", "table.csv"]:
        assert _mode(base / name) == file_mode, name
    for name in ("", "a", "a/b", "checkpoints"):
        assert _mode(base / name) == folder_mode, name or "out"
    assert _mode(make_folder(tmp_path / "made" / "deep")) == folder_mode
    staging = make_temp_folder(tmp_path / "staging-parent", ".stage.")
    assert staging.is_dir() and not any(staging.iterdir()) and _mode(staging) == folder_mode
    # Rewriting a file gives it the umask's mode again (a new file is renamed over it).
    (base / "study.json").chmod(0o640)
    atomic_write_json(base / "study.json", {"x": 2})
    assert _mode(base / "study.json") == file_mode
    # No temporary file is left behind.
    assert not [path for path in base.rglob("*.tmp")]


def test_extracted_archives_follow_the_umask(
    tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSFERLENS_CACHE", str(tmp_path / "cache"))
    tree = tmp_path / "tree" / "pacs64"
    tree.mkdir(parents=True)
    (tree / "a.txt").write_text("x")
    with tarfile.open(tmp_path / "pacs-64px.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname="pacs64")
    extracted = extract_once(tmp_path / "pacs-64px.tar.gz")
    assert _mode(extracted) == MODES[umask][1]


def test_a_trained_run_folder_is_readable_under_umask_022(tmp_path: Path) -> None:
    config = {
        "model": "fixup_resnet10",
        "model_kwargs": {"stem": "cifar", "width": 4},
        "data": {
            "name": "synthetic",
            "domain": "real",
            "image_size": 8,
            "train_size": 16,
            "test_size": 8,
        },
        "epochs": 1,
        "batch_size": 8,
        "lr": 0.01,
        "device": "cpu",
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    previous = os.umask(0o022)
    try:
        assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    finally:
        os.umask(previous)
    written = [p for p in (tmp_path / "run").rglob("*")]
    assert any(p.suffix == ".safetensors" for p in written)
    wrong = {
        str(p.relative_to(tmp_path)): oct(_mode(p))
        for p in written
        if _mode(p) != (0o755 if p.is_dir() else 0o644)
    }
    assert not wrong


def test_the_report_follows_the_umask(tmp_path: Path, umask: int) -> None:
    from fixtures_report import make_study
    from transferlens.report import build_report

    study = make_study(tmp_path / "study")
    index = build_report(study)
    file_mode, folder_mode = MODES[umask]
    assert _mode(index.parent) == folder_mode
    assert {_mode(path) for path in index.parent.iterdir() if path.is_file()} == {file_mode}
