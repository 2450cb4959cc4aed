"""The report: every section and image of a fabricated finished study, the findings decided
right on hand-made tables (holding and failing), and studies with analyses missing."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fixtures_report import (
    MISTAKE_COUNTS,
    PRETRAIN_EPOCHS,
    TARGETS,
    fixture_image_loader,
    fixture_images,
    headline,
    kappa_from_counts,
    make_study,
    relative_gap,
)
from transferlens.cli import main
from transferlens.errors import UserInputError
from transferlens.report import build_report, compute_findings, findings_table, gallery
from transferlens.report.findings import lower_modules
from transferlens.report.tables import load_results, main_target_runs, target_order

SECTIONS = ("findings", "training", "reuse", "mistakes", "cka", "distance", "interpolation",
            "criticality", "pretrain", "provenance")  # fmt: skip
ANALYSIS_TABLES = ("reuse", "mistakes", "mistakes_examples", "cka", "cka_matrix", "distance",
                   "interpolation", "barriers", "criticality", "criticality_path",
                   "pretrain_checkpoints")  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Section ids, image sources, findings rows and the visible text of a report page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.finding_rows: list[str] = []
        self.chunks: list[str] = []
        self.feed(text)
        self.text = " ".join(" ".join(self.chunks).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "section":
            self.sections.append(attributes.get("id") or "")
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        if tag == "tr" and (attributes.get("id") or "").startswith("finding-"):
            self.finding_rows.append(attributes["id"][len("finding-") :])

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def read_page(index: Path) -> Page:
    return Page(index.read_text(encoding="utf-8"))


def assert_nonblank_png(path: Path) -> np.ndarray:
    assert path.is_file(), f"missing image {path.name}"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 100, path.name
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.var() > 0, f"{path.name} is blank"
    return pixels


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Page]:
    """The report of the full fixture study, written by the CLI with the gallery hook replaced."""
    study = make_study(tmp_path_factory.mktemp("full") / "study")
    patch = pytest.MonkeyPatch()
    patch.setattr(gallery, "load_test_images", fixture_image_loader)
    try:
        assert main(["report", str(study), "--quiet"]) == 0
    finally:
        patch.undo()
    return study, read_page(study / "report" / "index.html")


def verdicts(findings: list) -> dict[str, bool | None]:
    return {finding.key: finding.reproduced for finding in findings}


def evidence(findings: list, key: str) -> str:
    return next(finding.evidence for finding in findings if finding.key == key)


# --- the whole page -------------------------------------------------------------------------


def test_every_section_is_present_and_ran(full_report: tuple[Path, Page]) -> None:
    _, page = full_report
    assert page.sections == list(SECTIONS)
    assert "Not run" not in page.text
    assert len(page.finding_rows) == 10


def test_every_image_is_a_nonblank_png(full_report: tuple[Path, Page]) -> None:
    study, page = full_report
    figures = [src for src in page.images if not src.startswith("gallery_")]
    tiles = [src for src in page.images if src.startswith("gallery_")]
    for name in ("learning_curves", "block_shuffling", "kappa", "cka_layers", "cka_matrix",
                 "distance_modules", "interpolation", "rewind_heatmap", "criticality",
                 "conv1_paths", "pretrain_checkpoints"):  # fmt: skip
        assert f"{name}.png" in figures
    assert len(tiles) == len(TARGETS) * 3 * 4  # 3 cells x 4 examples per target
    for src in page.images:
        assert "/" not in src and not src.startswith(("http:", "https:", "data:"))
        assert_nonblank_png(study / "report" / src)
    written = {path.name for path in (study / "report").glob("*.png")}
    assert written == set(page.images)


def test_gallery_shows_the_real_test_images(full_report: tuple[Path, Page]) -> None:
    study, page = full_report
    images = fixture_images()
    tiles = [src for src in page.images if src.startswith("gallery_near_PT-RIT_only_first_wrong_")]
    assert len(tiles) == 4
    for src in tiles:
        index = int(src.rsplit("_", 1)[1].removesuffix(".png"))
        pixels = np.asarray(Image.open(study / "report" / src).convert("RGB"))
        factor = pixels.shape[0] // images.shape[1]
        assert factor >= 2  # enlarged by an integer factor, nearest neighbour
        np.testing.assert_array_equal(pixels[::factor, ::factor], images[index])


def test_page_shows_the_numbers_with_intervals(full_report: tuple[Path, Page]) -> None:
    _, page = full_report
    text = page.text
    pt, rit = headline(True)["near"]
    assert f"{relative_gap(pt, rit):.1f}%" in text
    assert "80.0% (79.0%–81.0%, n=2)" in text  # near P-T final, mean and range of two seeds
    assert "0.700 (0.690–0.710, n=2)" in text  # far is multi-label: ROC-AUC, not percent
    kappa = kappa_from_counts(*MISTAKE_COUNTS["PT-PT"])
    assert f"{kappa:.2f} [{kappa - 0.08:.2f}, {kappa + 0.08:.2f}]" in text
    assert "0.90 [0.87, 0.93]" in text  # CKA PT-PT conv1 with its interval
    assert "30.0 points" in text  # RIT-RIT barrier of an accuracy target
    # Targets closest first, from study.json's closeness (runs.csv lists far first).
    header = text[: text.index("Findings")]
    assert header.index("near") < header.index("middle") < header.index("far")
    for library in ("torch", "torchvision", "numpy", "transferlens"):
        assert library in text
    assert "target-neapt000" in text and "9.0 s" in text  # run hash and its summed epoch times


# --- findings on hand-made tables -----------------------------------------------------------


def test_every_finding_holds_when_the_numbers_agree(tmp_path: Path) -> None:
    findings = compute_findings(make_study(tmp_path / "study") / "results")
    assert verdicts(findings) == {finding.key: True for finding in findings}
    assert len(findings) == 10
    assert "near: P-T 80.0% vs RI-T 55.0%" in evidence(findings, "pt_beats_rit")
    assert "far: P-T 0.700 vs RI-T 0.670" in evidence(findings, "pt_beats_rit")
    gaps = "; ".join(f"{t} {relative_gap(*headline(True)[t]):.1f}%" for t in TARGETS)
    assert gaps in evidence(findings, "gap_largest_on_closest")
    assert f"from epoch 2 of {PRETRAIN_EPOCHS[-1]}" in evidence(findings, "pretrain_gains_saturate")
    rewind = evidence(findings, "rewind_lower_costs_rit_more")
    assert "RI-T loses 25.0 points vs P-T 1.0 points" in rewind


def test_every_finding_fails_when_the_numbers_disagree(tmp_path: Path) -> None:
    findings = compute_findings(make_study(tmp_path / "study", hold=False) / "results")
    assert verdicts(findings) == {finding.key: False for finding in findings}
    assert "far: P-T 0.600 vs RI-T 0.650" in evidence(findings, "pt_beats_rit")
    assert "closest target near" in evidence(findings, "gap_largest_on_closest")
    distance = evidence(findings, "pt_closer_in_parameters")
    assert "middle: PT-P 20.0 vs RIT-P 17.0 [does not hold]" in distance
    assert "not at layer4 (PT-PT 0.16 [0.13, 0.19] vs RIT-RIT 0.50 [0.47, 0.53])" in evidence(
        findings, "cka_pt_higher"
    )
    assert "(intervals overlap)" in evidence(findings, "pt_mistakes_more_similar")
    assert "from epoch 4 of 4" in evidence(findings, "pretrain_gains_saturate")
    table = findings_table(findings)
    assert "0 of 10 decided findings reproduced" in table
    assert all(len(line) <= 100 for line in table.splitlines())


def test_a_finding_fails_when_one_target_disagrees(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study")
    barriers = pd.read_csv(study / "results" / "barriers.csv")
    mask = (barriers["target"] == "middle") & (barriers["pair"] == "PT-PT")
    barriers.loc[mask, "metric_barrier"] = 0.31  # just above RIT-RIT's 0.30
    barriers.to_csv(study / "results" / "barriers.csv", index=False)
    found = verdicts(compute_findings(study))  # a study folder works too
    assert found["barrier_rit_higher"] is False
    assert sum(value is False for value in found.values()) == 1


def test_means_over_seed_rows_decide(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study")
    mistakes = pd.read_csv(study / "results" / "mistakes.csv")
    # A second RIT-RIT seed pair on near: kappas 0.12 and 0.96 average 0.54 < PT-PT 0.73.
    extra = mistakes[(mistakes["target"] == "near") & (mistakes["pair"] == "RIT-RIT")].copy()
    extra["kappa"] = 0.96
    pd.concat([mistakes, extra]).to_csv(study / "results" / "mistakes.csv", index=False)
    findings = compute_findings(study / "results")
    assert verdicts(findings)["pt_mistakes_more_similar"] is True
    expected = (kappa_from_counts(*MISTAKE_COUNTS["RIT-RIT"]) + 0.96) / 2
    assert f"RIT-RIT {expected:.2f}" in evidence(findings, "pt_mistakes_more_similar")


def test_findings_not_run_without_their_tables(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit=ANALYSIS_TABLES)
    findings = compute_findings(study / "results")
    found = verdicts(findings)
    assert found.pop("pt_beats_rit") is True and found.pop("gap_largest_on_closest") is True
    assert set(found.values()) == {None}
    assert "not run" in findings_table(findings)


def test_headline_falls_back_to_reuse_table(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit=("runs",))
    findings = compute_findings(study / "results")
    assert verdicts(findings)["pt_beats_rit"] is True
    assert "(reuse.csv)" in evidence(findings, "pt_beats_rit")
    assert verdicts(findings)["rewind_lower_costs_rit_more"] is None  # needs runs.csv's baseline


def test_checkpoint_and_shuffled_runs_are_not_headline_runs(tmp_path: Path) -> None:
    runs = load_results(make_study(tmp_path / "study")).get("runs")
    main_runs = main_target_runs(runs)
    assert len(main_runs) == len(TARGETS) * 2 * 2  # targets x inits x seeds
    assert main_runs["final_test_metric"].min() > 0.5  # the 0.3 checkpoint-0 runs are out


@pytest.mark.parametrize(
    ("study", "expected"),
    [
        (
            {
                "targets": [
                    {"name": "c", "closeness": 3},
                    {"name": "a", "closeness": 1},
                    {"name": "b", "closeness": 2},
                ]
            },
            ["a", "b", "c"],
        ),  # fmt: skip
        ({"targets": ["c", "a", "b"]}, ["c", "a", "b"]),
        ({"targets": {"b": {}, "c": {}}}, ["b", "c", "a"]),
        (None, ["c", "b", "a"]),
        (
            {"name": "s", "study": {"targets": [{"label": "b", "data": {}}, {"label": "a"}]}},
            ["b", "a", "c"],
        ),  # fmt: skip
    ],
)
def test_target_order(study: dict | None, expected: list[str]) -> None:
    runs = pd.DataFrame({"target": ["c", "b", "c", "a"]})
    assert target_order(study, [runs]) == expected


def test_runner_groups_column_decides_headline_runs(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study")
    path = study / "results" / "runs.csv"
    runs = pd.read_csv(path)
    seed_zero = runs["run_id"].str.endswith("000")
    runs["groups"] = np.where(seed_zero, "main;pretrain_checkpoints", "block_shuffle")
    runs["error"] = "a message, not a number"
    runs.to_csv(path, index=False)
    main_runs = main_target_runs(load_results(study).get("runs"))
    expected = runs.loc[seed_zero & (runs["kind"] == "target"), "run_id"]
    assert sorted(main_runs["run_id"]) == sorted(expected)


def test_lower_modules() -> None:
    names = ["conv1", "layer1.0", "layer1.1", "layer10.0", "layer2.0", "fc"]
    assert lower_modules(names) == ["conv1", "layer1.0", "layer1.1"]
    assert lower_modules(["stem", "a", "b", "c", "d", "e", "head"]) == ["stem", "a"]


# --- studies with analyses missing, bad input, the hook -------------------------------------


def test_partial_study_still_writes_a_page(tmp_path: Path) -> None:
    missing = ("reuse", "cka", "cka_matrix", "criticality", "criticality_path", "mistakes_examples",
               "interpolation", "barriers", "pretrain_checkpoints")  # fmt: skip
    study = make_study(tmp_path / "study", omit=missing)
    index = build_report(study, image_loader=fixture_image_loader)
    page = read_page(index)
    assert page.sections == list(SECTIONS)
    for table in ("reuse", "cka", "pretrain_checkpoints"):
        assert f"Not run: results/{table}.csv is missing" in page.text
    assert "results/criticality.csv, results/criticality_path.csv are missing" in page.text
    assert "results/mistakes_examples.csv is missing, so the gallery of test images" in page.text
    assert "Result tables not found (analyses not run)" in page.text
    assert {"learning_curves.png", "kappa.png", "distance_modules.png"} <= set(page.images)
    for src in page.images:
        assert_nonblank_png(index.parent / src)


def test_study_with_only_a_spec_writes_a_page(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.json").write_text('{"name": "empty", "targets": ["x"]}', encoding="utf-8")
    page = read_page(build_report(study))
    assert page.images == []
    assert page.text.count("Not run:") == 8
    assert "No runs found" in page.text


def test_gallery_loader_failure_is_reported_not_fatal(tmp_path: Path) -> None:
    kept = {"mistakes", "mistakes_examples"}
    study = make_study(tmp_path / "study", omit=set(ANALYSIS_TABLES) - kept)

    def unavailable(study_dir: Path, target: str, indices: list[int]) -> np.ndarray:
        raise gallery.ImagesUnavailable("the test split keeps no raw images")

    page = read_page(build_report(study, image_loader=unavailable))
    assert "Gallery of near not shown: the test split keeps no raw images" in page.text


def test_report_replaces_the_old_one_atomically(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit=ANALYSIS_TABLES)
    stale = study / "report" / "stale.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    index = build_report(study)
    assert not stale.exists() and index.is_file()
    assert sorted(path.name for path in study.iterdir() if path.name.startswith(".")) == []
    assert (os.stat(index).st_mode & 0o777) == 0o644


def test_missing_study_dir_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert main(["report", str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(missing) in error
    with pytest.raises(UserInputError, match="results folder not found"):
        compute_findings(missing / "results")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_an_empty_table_is_an_analysis_without_rows(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit=set(ANALYSIS_TABLES) - {"cka"})
    # What an analysis that found nothing to compare writes (pandas: no header at all).
    (study / "results" / "criticality_path.csv").write_text(
        pd.DataFrame().to_csv(index=False), encoding="utf-8"
    )
    page = read_page(build_report(study, image_loader=fixture_image_loader))
    assert page.sections == list(SECTIONS)


def test_malformed_tables_name_file_and_column(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit=set(ANALYSIS_TABLES) - {"cka"})
    cka = pd.read_csv(study / "results" / "cka.csv")
    cka.drop(columns=["cka_low"]).to_csv(study / "results" / "cka.csv", index=False)
    with pytest.raises(UserInputError, match=r"cka\.csv: missing column\(s\) cka_low"):
        build_report(study)
    cka.assign(cka="high").to_csv(study / "results" / "cka.csv", index=False)
    with pytest.raises(UserInputError, match=r"cka\.csv: column cka must hold numbers"):
        compute_findings(study / "results")


def test_default_image_hook_reads_raw_test_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default hook rebuilds the run's data unshuffled and maps indices through Subsets."""
    import torch
    from torch.utils.data import Dataset, Subset

    import transferlens.data as data

    study = make_study(tmp_path / "study", omit=ANALYSIS_TABLES)
    raw = torch.randint(0, 256, (10, 3, 4, 5), dtype=torch.uint8)

    class RawImages(Dataset):
        images = raw

        def __len__(self) -> int:
            return 10

    built: list[dict] = []

    def fake_build(spec: dict) -> object:
        built.append(spec)
        return type("Splits", (), {"test": Subset(RawImages(), [9, 7, 5, 3])})()

    monkeypatch.setattr(data, "DataSpec", lambda **kwargs: kwargs)
    monkeypatch.setattr(data, "build_data", fake_build)
    images = gallery.load_test_images(study, "near", [0, 2])
    assert images.dtype == np.uint8 and images.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(images, raw[[9, 5]].permute(0, 2, 3, 1).numpy())
    assert built[0]["block_size"] is None and built[0]["domain"] == "near"


def test_file_backed_test_images_are_decoded(tmp_path: Path) -> None:
    """Data sets read from files (DomainNet, CheXpert) give their images, centre-cropped."""
    from torch.utils.data import Subset

    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8) for _ in range(3)]
    paths = []
    for number, array in enumerate(arrays):
        paths.append(tmp_path / f"{number}.png")
        Image.fromarray(array).save(paths[-1])

    class Files:
        mode = "RGB"

        def __init__(self) -> None:
            self.paths = paths

        def __len__(self) -> int:
            return len(paths)

    images = gallery.raw_test_images(Subset(Files(), [2, 0]), [1, 0], image_size=8)
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], arrays[0][:, 2:10])  # 8 x 12 -> centre 8 x 8
    np.testing.assert_array_equal(images[1], arrays[2][:, 2:10])
