"""The study writes into ``results/`` everything the report reads (transferlens.results)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import TINY_STUDY, merged
from transferlens.data import build_data
from transferlens.io import append_jsonl, atomic_write_json
from transferlens.results import TABLE_COLUMNS, image_path, table_path
from transferlens.study.loading import parse_study
from transferlens.study.plan import plan_study
from transferlens.study.results_files import write_gallery_images
from transferlens.study.runs_table import write_runs_table
from transferlens.study.store import StudyStore

# Two targets (the targets table keeps their order), a block sweep, mistakes.
STUDY = merged(
    TINY_STUDY,
    name="results",
    targets=[*TINY_STUDY["targets"], {"label": "clipart", "data": {"domain": "clipart"}}],
    block_shuffle={"targets": ["real"], "block_sizes": [None, 2]},
    analyses={"mistakes": {}},
)


@pytest.fixture(scope="module")
def plan():
    return plan_study(parse_study(STUDY, "results.yaml"), "results.yaml")


def _finish(store: StudyStore, run_id: str, epochs: int, task: str | None = "multiclass") -> None:
    """A run folder as training leaves it (spec, metrics, completion marker)."""
    folder = store.run_dir(run_id)
    atomic_write_json(folder / "spec.json", {"run": run_id})
    for epoch in range(epochs + 1):
        record = {"epoch": epoch, "test_metric": 0.5, "test_loss": 1.0, "train_metric": 0.6}
        append_jsonl(folder / "metrics.jsonl", {**record, "train_loss": 0.9, "seconds": 2.0})
    atomic_write_json(folder / "complete.json", {"final_test_metric": 0.5, "task": task})


def _read(store: StudyStore, name: str) -> pd.DataFrame:
    return pd.read_csv(table_path(store.results_dir, name), dtype={"run_id": str})


def test_runs_table_writes_epochs_provenance_targets_and_study_json(tmp_path, plan):
    store = StudyStore(tmp_path / "study")
    store.write_study(plan)
    source = plan.source_run.run_id
    main_pt = plan.select(init="PT", target="real", group="main")[0].run_id
    _finish(store, source, 2)
    _finish(store, main_pt, 1)
    stray = store.run_dir("target-0123456789")  # a run an earlier plan named
    stray.mkdir(parents=True)
    append_jsonl(stray / "metrics.jsonl", {"epoch": 0, "seconds": 0.0})
    write_runs_table(plan, store)

    for name in ("runs", "epochs", "provenance", "targets"):
        header = table_path(store.results_dir, name).read_text().splitlines()[0].split(",")
        assert tuple(header[: len(TABLE_COLUMNS[name])]) == TABLE_COLUMNS[name], name

    epochs = _read(store, "epochs")
    assert list(epochs.run_id) == [source] * 3 + [main_pt] * 2  # plan order, epoch order
    assert list(epochs.epoch) == [0, 1, 2, 0, 1]
    assert (epochs.seconds == 2.0).all() and (epochs.train_loss == 0.9).all()

    provenance = _read(store, "provenance").set_index("run_id")
    assert list(provenance.index) == [source, main_pt, "target-0123456789"]
    assert provenance.loc[source, "epochs_logged"] == 3
    assert provenance.loc[source, "train_seconds"] == 6.0
    assert bool(provenance.loc[source, "complete"]) is True
    assert bool(provenance.loc["target-0123456789", "complete"]) is False
    assert pd.isna(provenance.loc["target-0123456789", "spec_sha256"])  # no spec.json
    assert len(provenance.loc[main_pt, "spec_sha256"]) == 12

    targets = _read(store, "targets")
    assert list(targets.target) == ["real", "clipart"]  # the study's order
    assert targets.task[0] == "multiclass" and pd.isna(targets.task[1])  # none complete yet

    copied = store.results_dir / "study.json"
    assert copied.read_bytes() == store.study_file.read_bytes()
    assert json.loads(copied.read_text())["name"] == "results"


def test_gallery_images_are_the_raw_test_images(tmp_path, plan):
    store = StudyStore(tmp_path / "study")
    rows = [
        {"target": "clipart", "pair": "PT-RIT", "cell": "both_wrong", "index": index}
        for index in (3, 0, 3)
    ]
    frame = pd.DataFrame(rows, columns=TABLE_COLUMNS["mistakes_examples"])
    store.results_dir.mkdir(parents=True)
    frame.to_csv(table_path(store.results_dir, "mistakes_examples"), index=False)

    assert write_gallery_images(plan, store) == 2
    assert write_gallery_images(plan, store) == 0  # kept: a test image never changes
    spec = plan.select(init="RIT", target="clipart")[0].spec.data
    stored = build_data(spec).test.images  # uint8 [N, C, H, W], before normalisation
    for index in (0, 3):
        png = np.asarray(Image.open(image_path(store.results_dir, "clipart", index)))
        assert png.dtype == np.uint8
        assert np.array_equal(png, stored[index].numpy().transpose(1, 2, 0))


def test_no_examples_no_images(tmp_path, plan):
    store = StudyStore(tmp_path / "study")
    assert write_gallery_images(plan, store) == 0
    store.results_dir.mkdir(parents=True)
    table_path(store.results_dir, "mistakes_examples").write_text("\n")
    assert write_gallery_images(plan, store) == 0
    assert not (store.results_dir / "images").exists()
