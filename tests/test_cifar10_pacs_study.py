"""``studies/cifar10-pacs.yaml`` end to end on tiny sizes (runs when ../shared/data exists).

The study file itself, shrunk: every stage of the full study (pre-training on CIFAR-10
with its checkpoints, P-T and RI-T on the four PACS domains, the block-shuffle sweep from
the whole image down to pixels on photo and sketch, fine-tunes from every listed
pre-training checkpoint, all seven analyses, the report) on a few dozen images per
domain and two epochs per run. Its numbers mean nothing; it checks that the study runs
from the tarballs to a report whose gallery holds real PACS test images.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from transferlens.cli import main
from transferlens.data.transforms import decode_image
from transferlens.results import image_path
from transferlens.study import load_study, plan_study

pytestmark = [pytest.mark.realdata, pytest.mark.slow]
STUDY_FILE = Path(__file__).resolve().parents[1] / "studies" / "cifar10-pacs.yaml"
TABLES = ("runs", "reuse", "mistakes", "mistakes_examples", "cka", "cka_matrix", "distance",
          "interpolation", "barriers", "criticality", "criticality_path",
          "pretrain_checkpoints")  # fmt: skip


def tiny_study(full: dict, output: Path) -> dict:
    """The full study with tiny sizes and epochs; every stage and sweep kept."""
    study = copy.deepcopy(full)
    study["name"] = "cifar10-pacs-tiny"
    study["output"] = str(output)
    study["source"]["data"].update(train_size=1000, test_size=200)
    for target in study["targets"]:
        target["data"].update(train_size=70, test_size=42)  # 10 and 6 per class
    for arm in study["training"].values():
        arm.update(epochs=2, lr_milestones=None, train_eval_size=64)
    study["training"]["pretrain"]["epochs"] = 4
    study["seeds"] = [0, 1]
    study["block_shuffle"]["seeds"] = [0]
    study["pretrain_checkpoints"].update(seeds=[0], epochs=[0, 1, 2, 3, "final"])
    study["analyses"].update(
        mistakes={"n_bootstrap": 50},
        cka={"n_bootstrap": 20},
        interpolation={"points": 3},
        criticality={"alphas": 3, "sigmas": 3, "n_noise": 1, "max_examples": 32,
                     "path_points": 3, "path_sigmas": [0.0, 0.1]},
    )  # fmt: skip
    return study


def test_the_study_file_is_the_paper_protocol(shared_data):
    study = load_study(STUDY_FILE, data_root=shared_data)
    plan = plan_study(study)
    assert [t.label for t in study.targets] == ["photo", "art_painting", "cartoon", "sketch"]
    for target in study.targets:  # at least 3 seeds for P-T and RI-T on every domain
        for init in ("PT", "RIT"):
            seeds = {r.meta.seed for r in plan.select(init=init, target=target.label)}
            assert len(seeds & set(study.seeds)) >= 3
    blocks = {r.meta.block_size for r in plan.select(group="block_shuffle", target="sketch")}
    assert blocks == {None, 16, 8, 4, 2, 1, 0}  # the whole image down to 1, and pixels
    epochs = {r.meta.pretrain_epoch for r in plan.select(group="pretrain_checkpoints")}
    assert len(epochs) >= 5
    assert set(study.analyses) == {
        "reuse", "mistakes", "cka", "distance", "interpolation", "criticality",
        "pretrain_checkpoints",
    }  # fmt: skip


def test_tiny_cifar10_pacs_study_runs_to_a_report_of_real_images(
    shared_data, shared_data_cache, tmp_path, monkeypatch
):
    monkeypatch.setenv("TRANSFERLENS_CACHE", str(shared_data_cache))
    monkeypatch.delenv("TRANSFERLENS_DATA", raising=False)
    full = yaml.safe_load(STUDY_FILE.read_text(encoding="utf-8"))
    out = tmp_path / "study"
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(yaml.safe_dump(tiny_study(full, out)), encoding="utf-8")

    # Without a data root the study stops before any work, naming what is missing.
    assert main(["run", str(study_file), "--no-progress"]) == 2
    assert not (out / "runs").exists()

    args = ["run", str(study_file), "--data-root", str(shared_data), "--no-progress"]
    assert main(args + ["--jobs", "2"]) == 0
    runs = pd.read_csv(out / "results" / "runs.csv")
    assert len(runs) == len(plan_study(load_study(study_file, data_root=shared_data)))
    assert (runs["status"] == "complete").all()
    for table in TABLES:
        assert not pd.read_csv(out / "results" / f"{table}.csv").empty, table
    reuse = pd.read_csv(out / "results" / "reuse.csv")
    assert set(reuse["target"]) == {"photo", "sketch"}
    assert main(["report", str(out), "--quiet"]) == 0
    index = (out / "report" / "index.html").read_text(encoding="utf-8")
    for target in ("photo", "art_painting", "cartoon", "sketch"):
        assert target in index

    # The gallery tiles are PACS test images: each equals one file of its domain and class.
    examples = pd.read_csv(out / "results" / "mistakes_examples.csv")
    pacs = shared_data_cache / "extracted"
    checked = 0
    for target in ("photo", "sketch"):
        row = examples[examples["target"] == target].iloc[0]
        tile_name = f"gallery_{target}_{row['pair']}_{row['cell']}_{row['index']}.png"
        tile = np.asarray(Image.open(out / "report" / tile_name).convert("RGB"))
        factor = tile.shape[0] // 32
        pixels = tile[::factor, ::factor]
        class_folder = _class_folder(pacs, target, int(row["label"]))
        decoded = (decode_image(path, 32).permute(1, 2, 0).numpy() for path in class_folder)
        decoded = list(decoded)
        assert any(np.array_equal(pixels, image) for image in decoded), tile_name
        # The study exported the same test image into results/ for the report.
        exported = image_path(out / "results", target, int(row["index"]))
        exported_pixels = np.asarray(Image.open(exported).convert("RGB"))
        assert any(np.array_equal(exported_pixels, image) for image in decoded), exported
        checked += 1
    assert checked == 2


def _class_folder(extracted: Path, domain: str, label: int) -> list[Path]:
    """The image files of class ``label`` (sorted class folder names) of a PACS domain."""
    roots = [path for path in extracted.rglob(domain) if path.is_dir()]
    assert roots, f"no extracted PACS folder for {domain}"
    classes = sorted(p for p in roots[0].iterdir() if p.is_dir())
    return sorted(p for p in classes[label].iterdir() if os.path.splitext(p.name)[1] == ".jpg")
