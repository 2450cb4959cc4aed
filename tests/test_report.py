"""The report: every section and image of a fabricated finished study read from its
``results/`` folder alone, the findings decided right on hand-made tables (holding and
failing), studies with analyses missing, and what the report may not touch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fixtures_report import (
    MISTAKE_COUNTS,
    ORPHAN_RUN,
    TARGETS,
    fixture_images,
    headline,
    kappa_from_counts,
    make_study,
    relative_gap,
)
from transferlens.cli import main
from transferlens.errors import UserInputError
from transferlens.report import (
    ImagesUnavailable,
    build_report,
    compute_findings,
    findings_table,
    load_results,
    load_test_images,
)
from transferlens.report.findings import lower_modules
from transferlens.report.gallery import cell_title
from transferlens.report.sections_training import learning_curves_frame
from transferlens.report.seed_pairs import (
    describe_pairs,
    first_seed_pair,
    seed_pairs,
    seeds_by_model,
)
from transferlens.report.tables import target_order
from transferlens.results import image_path, main_runs

SECTIONS = ("findings", "training", "reuse", "mistakes", "cka", "distance", "interpolation",
            "criticality", "pretrain", "module_map", "provenance")  # fmt: skip
ANALYSIS_TABLES = ("reuse", "mistakes", "mistakes_examples", "cka", "cka_matrix", "distance",
                   "interpolation", "barriers", "criticality", "criticality_path",
                   "pretrain_checkpoints")  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transferlens" / "report"


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
    """The report of the full fixture study (results/ only, no run folders), by the CLI."""
    study = make_study(tmp_path_factory.mktemp("full") / "study")
    assert [path.name for path in study.iterdir()] == ["results"]
    assert main(["report", str(study), "--quiet"]) == 0
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
    assert len(page.finding_rows) == 12  # one row per finding (docs/findings.md)


def test_every_image_is_a_nonblank_png(full_report: tuple[Path, Page]) -> None:
    study, page = full_report
    figures = [src for src in page.images if not src.startswith("gallery_")]
    tiles = [src for src in page.images if src.startswith("gallery_")]
    for name in ("learning_curves", "block_shuffling", "kappa", "cka_layers", "cka_matrix",
                 "distance_modules", "interpolation", "rewind_heatmap", "criticality",
                 "criticality_path", "pretrain_checkpoints"):  # fmt: skip
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
    assert "fixture study" in text  # the title, from results/study.json


def test_provenance_lists_every_run_and_orphan_folder(full_report: tuple[Path, Page]) -> None:
    """Rows come from runs.csv joined to provenance.csv, then folders runs.csv does not list."""
    study, page = full_report
    html = (study / "report" / "index.html").read_text(encoding="utf-8")
    runs = pd.read_csv(study / "results" / "runs.csv")
    assert html.count("<tr><td>target-") + html.count("<tr><td>source-") == len(runs) + 1
    run_id, count, seconds, digest = ORPHAN_RUN
    orphan = f"{run_id} target      incomplete (not in runs.csv) {count} {seconds:.1f} s {digest}"
    assert " ".join(orphan.split()) in page.text  # the all-digit digest stays text
    checkpoint_run = "target-neaptck0 target PT near 0 none 0 complete 0 n/a n/a"
    assert checkpoint_run in page.text  # a run without a row in provenance.csv


class GalleryPlaces(HTMLParser):
    """For every gallery tile: is it inside a ``<details>`` that is closed on load?"""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.open_stack: list[bool] = []
        self.tiles_collapsed: list[bool] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "details":
            self.open_stack.append(any(name == "open" for name, _ in attrs))
        if tag == "img" and (dict(attrs).get("src") or "").startswith("gallery_"):
            self.tiles_collapsed.append(bool(self.open_stack) and not any(self.open_stack))

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.open_stack.pop()


def test_galleries_are_collapsed(full_report: tuple[Path, Page]) -> None:
    study, page = full_report
    places = GalleryPlaces((study / "report" / "index.html").read_text(encoding="utf-8"))
    assert len(places.tiles_collapsed) == len(TARGETS) * 3 * 4
    assert all(places.tiles_collapsed)
    for target in TARGETS:  # the closed gallery's summary says what is inside
        assert (
            f"Test images of {target}, PT-RIT: P-T seed 0 (first) vs RI-T seed 0 (second) (12 images)"
            in page.text
        )


def test_galleries_are_captioned_with_their_target_and_runs(full_report: tuple[Path, Page]) -> None:
    _, page = full_report
    assert "Real test images" not in page.text
    for target in TARGETS:
        assert f"Test images of {target} from each cell of its 2 x 2 table" in page.text
        prefix = f"target-{target[:3]}"
        assert (
            f"first = P-T seed 0 (run {prefix}pt000), second = RI-T seed 0 (run {prefix}rit000)"
            in page.text
        )
    assert "P-T seed 0 wrong, RI-T seed 0 right: 4 shown" in page.text
    assert "P-T seed 0: 1" in page.text  # each tile names the model of its prediction


def test_mistakes_table_names_the_models_of_each_pair(full_report: tuple[Path, Page]) -> None:
    _, page = full_report
    both_right, both_wrong, first_wrong, second_wrong = MISTAKE_COUNTS["PT-PT"]
    row = (f"near PT-PT P-T seed 0 (first) vs P-T seed 1 (second) {sum(MISTAKE_COUNTS['PT-PT'])} "
           f"{both_right} {both_wrong} {first_wrong} (P-T seed 0 wrong) "
           f"{second_wrong} (P-T seed 1 wrong)")  # fmt: skip
    assert row in page.text
    pooled = "mean of 4 seed pairs: P-T seeds 0, 1 (first) x RI-T seeds 0, 1 (second)"
    assert f"near PT-RIT {pooled}" in page.text
    assert "the lower seed is first" in page.text


def test_seed_pairs_follow_the_analyses_order() -> None:
    runs = pd.DataFrame(
        [
            dict(run_id=f"{init}-{seed}", kind="target", init=init, target="t", seed=seed,
                 block_size=None, pretrain_epoch=None, status=status)
            for init in ("PT", "RIT")
            for seed, status in ((2, "complete"), (0, "complete"), (1, "complete"), (3, "failed"))
        ]
    )  # fmt: skip
    seeds = seeds_by_model(runs)
    assert [(a.run_id, b.run_id) for a, b in seed_pairs(seeds, "t", "PT-PT")] == [
        ("PT-0", "PT-1"), ("PT-0", "PT-2"), ("PT-1", "PT-2"),
    ]  # fmt: skip
    assert first_seed_pair(seeds, "t", "PT-RIT")[1].described == "RI-T seed 0 (run RIT-0)"
    assert describe_pairs(seeds, "t", "RIT-RIT") == (
        "mean of 3 seed pairs of RI-T seeds 0, 1, 2, the lower seed first"
    )
    # Without runs.csv the models are named by position.
    assert describe_pairs({}, "t", "PT-PT") == "P-T (first) vs P-T (second)"
    first, second = first_seed_pair({}, "t", "PT-PT")
    assert cell_title(first.label, second.label, "only_first_wrong") == (
        "first P-T wrong, second P-T right"
    )


# --- findings on hand-made tables -----------------------------------------------------------


def test_findings_of_the_report_fixture(tmp_path: Path) -> None:
    """Two seeds per arm and no per-seed-pair tables: the verdicts across seeds
    (docs/findings.md; tests/test_findings_verdicts.py decides each finding on its own
    fixture) decide only what these runs can measure."""
    findings = compute_findings(make_study(tmp_path / "study") / "results")
    assert len(findings) == 12
    assert {f.verdict for f in findings} <= {"reproduced", "inconclusive", "not run"}
    headline_finding = next(f for f in findings if f.key == "pt_beats_rit")
    assert [p.verdict for p in headline_finding.parts] == ["reproduced"] * 2 + ["inconclusive"]
    text = evidence(findings, "pt_beats_rit")
    assert "near (P-T 80.0% vs RI-T 55.0%): +25.0 points [" in text
    assert "far (P-T 0.700 vs RI-T 0.670): +0.030 [" in text  # ROC-AUC
    assert "(P-T 2, RI-T 2 seeds)" in text
    gaps = ", ".join(f"{t} {relative_gap(*headline(True)[t]):.1f}%" for t in TARGETS)
    assert f"relative gaps (closest first): {gaps}" in evidence(findings, "gap_largest_on_closest")
    if not (tmp_path / "study" / "results" / "mistakes_pairs.csv").exists():
        kappa = evidence(findings, "pt_mistakes_more_similar")
        assert "[no spread across seeds]" in kappa and "-> inconclusive" in kappa
    # criticality.csv's rewound metrics are of each arm's first seed: one model per arm.
    rewind = evidence(findings, "rewind_lower_costs_rit_more")
    assert "near (RI-T loses 24.0 points vs P-T 0.0 points): +24.0 points [no spread" in rewind


def test_no_finding_is_reproduced_when_the_numbers_disagree(tmp_path: Path) -> None:
    findings = compute_findings(make_study(tmp_path / "study", hold=False) / "results")
    assert "reproduced" not in {finding.verdict for finding in findings}
    assert "far (P-T 0.600 vs RI-T 0.650): -0.050 [" in evidence(findings, "pt_beats_rit")
    assert "relative gaps (closest first): near 7.1%, middle 26.7%" in evidence(
        findings, "gap_largest_on_closest"
    )
    table = findings_table(findings)
    assert table.splitlines()[-1].startswith("0 reproduced, ")
    assert table.splitlines()[-1].endswith("(of 12 findings; rule: docs/findings.md)")
    assert all(len(line) <= 100 for line in table.splitlines())


def test_means_over_seed_rows_decide(tmp_path: Path) -> None:
    """Without mistakes_pairs.csv, a pair kind's value is the mean of its mistakes.csv rows
    (no spread across seeds: inconclusive)."""
    study = make_study(tmp_path / "study")
    mistakes = pd.read_csv(study / "results" / "mistakes.csv")
    # A second RIT-RIT seed pair on near: kappas 0.12 and 0.96 average 0.54 < PT-PT 0.73.
    extra = mistakes[(mistakes["target"] == "near") & (mistakes["pair"] == "RIT-RIT")].copy()
    extra["kappa"] = 0.96
    pd.concat([mistakes, extra]).to_csv(study / "results" / "mistakes.csv", index=False)
    (study / "results" / "mistakes_pairs.csv").unlink(missing_ok=True)
    findings = compute_findings(study / "results")
    assert next(f for f in findings if f.key == "pt_mistakes_more_similar").verdict == (
        "inconclusive"
    )
    expected = (kappa_from_counts(*MISTAKE_COUNTS["RIT-RIT"]) + 0.96) / 2
    assert f"RIT-RIT {expected:.3g}): " in evidence(findings, "pt_mistakes_more_similar")


def test_findings_not_run_without_their_tables(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit=ANALYSIS_TABLES)
    findings = compute_findings(study / "results")
    found = {finding.key: finding.verdict for finding in findings}
    from_runs = ("pt_beats_rit", "gap_largest_on_closest", "gap_shrinks_with_shuffling",
                 "pt_faster_at_smallest_block")  # fmt: skip
    assert "not run" not in {found.pop(key) for key in from_runs}  # runs.csv decides these
    assert set(found.values()) == {"not run"}
    assert "not run" in findings_table(findings)


def test_training_findings_need_runs_csv(tmp_path: Path) -> None:
    """reuse.csv holds means over seeds: the verdicts need runs.csv's one value per seed."""
    study = make_study(tmp_path / "study", omit=("runs",))
    findings = compute_findings(study / "results")
    assert verdicts(findings)["pt_beats_rit"] is None
    assert evidence(findings, "pt_beats_rit") == "runs.csv has no complete P-T/RI-T main runs"
    assert verdicts(findings)["rewind_lower_costs_rit_more"] is None  # needs runs.csv's baseline


def test_checkpoint_and_shuffled_runs_are_not_headline_runs(tmp_path: Path) -> None:
    runs = load_results(make_study(tmp_path / "study")).get("runs")
    headline_runs = main_runs(runs)
    assert len(headline_runs) == len(TARGETS) * 2 * 2  # targets x inits x seeds
    assert headline_runs["final_test_metric"].min() > 0.5  # the 0.3 checkpoint-0 runs are out


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
    headline_runs = main_runs(load_results(study).get("runs"))
    expected = runs.loc[seed_zero & (runs["kind"] == "target"), "run_id"]
    assert sorted(headline_runs["run_id"]) == sorted(expected)


def test_lower_modules() -> None:
    """The units of depth below 1/3 (unit i of n at i/(n-1)), head included in the count."""
    resnet10 = ["conv1", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "fc"]
    assert lower_modules(resnet10) == ["conv1", "layer1.0"]  # the demo's, as before the map
    names = ["conv1", "layer1.0", "layer1.1", "layer10.0", "layer2.0", "fc"]
    assert lower_modules(names) == ["conv1", "layer1.0"]  # depths 0, 0.2 (layer1.1: 0.4)
    assert lower_modules(["stem", "a", "b", "c", "d", "e", "head"]) == ["stem", "a"]  # 0, 1/6
    assert lower_modules(["only"]) == ["only"]


# --- studies with analyses missing, bad input, the hook -------------------------------------


def test_partial_study_still_writes_a_page(tmp_path: Path) -> None:
    missing = ("reuse", "cka", "cka_matrix", "criticality", "criticality_path", "mistakes_examples",
               "interpolation", "barriers", "pretrain_checkpoints")  # fmt: skip
    study = make_study(tmp_path / "study", omit=missing)
    index = build_report(study)
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
    (study / "results").mkdir(parents=True)
    spec = '{"name": "empty", "targets": ["x"]}'
    (study / "results" / "study.json").write_text(spec, encoding="utf-8")
    page = read_page(build_report(study))
    assert page.images == []
    assert page.text.count("Not run:") == 8
    assert "No runs found" in page.text and "empty" in page.text


def test_gallery_loader_failure_is_reported_not_fatal(tmp_path: Path) -> None:
    kept = {"mistakes", "mistakes_examples"}
    study = make_study(tmp_path / "study", omit=set(ANALYSIS_TABLES) - kept)

    def unavailable(study_dir: Path, target: str, indices: list[int]) -> np.ndarray:
        raise ImagesUnavailable("the test split keeps no raw images")

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
    page = read_page(build_report(study))
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


def test_provenance_as_the_study_layer_writes_it(tmp_path: Path) -> None:
    """``complete`` as true/false, an empty digest for a folder without a spec file."""
    study = make_study(tmp_path / "study", omit=ANALYSIS_TABLES)
    (study / "results" / "provenance.csv").write_text(
        "run_id,epochs_logged,train_seconds,spec_sha256,complete\n"
        "target-neapt000,6,9.0,0123456789ab,true\n"
        "target-gone00000,0,0.0,,false\n",
        encoding="utf-8",
    )
    text = read_page(build_report(study)).text
    assert "target-neapt000 target PT near 0 none 4 complete 6 9.0 s 0123456789ab" in text
    assert "target-gone00000 target incomplete (not in runs.csv) 0 n/a n/a" in text
    (study / "results" / "provenance.csv").write_text(
        "run_id,epochs_logged,train_seconds,spec_sha256,complete\nx,1,1.0,ab,maybe\n",
        encoding="utf-8",
    )
    with pytest.raises(UserInputError, match=r"provenance\.csv: column complete must hold"):
        build_report(study)


def test_report_ignores_run_folders_and_the_top_level_spec(tmp_path: Path) -> None:
    """Run folders and <study>/study.json may be stale or gone: only results/ is read."""
    study = make_study(tmp_path / "study")
    stale = study / "runs" / "target-neapt000"
    stale.mkdir(parents=True)
    (stale / "notes.txt").write_text("left over from an old layout", encoding="utf-8")
    (study / "study.json").write_text('{"name": "stale spec"}', encoding="utf-8")
    page = read_page(build_report(study))
    assert "fixture study" in page.text and "stale spec" not in page.text
    assert {"learning_curves.png", "kappa.png"} <= set(page.images)
    assert len([src for src in page.images if src.startswith("gallery_")]) == len(TARGETS) * 12


def test_report_package_does_not_reach_into_other_layers() -> None:
    """No import of train/data/models (lazy ones included) and no run-folder file name."""
    forbidden = ("transferlens.train", "transferlens.data", "transferlens.models")
    sources = sorted(REPORT_PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n.startswith(forbidden)], f"{source.name}: {names}"
    for path in [*sources, *sorted((REPORT_PACKAGE / "templates").iterdir())]:
        text = path.read_text(encoding="utf-8")
        for literal in ("spec.json", "metrics.jsonl", "complete.json", "runs/"):
            assert literal not in text, f"{path.name} names {literal}"


def test_building_a_report_imports_no_other_layer(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit=set(ANALYSIS_TABLES) - {"mistakes"})
    script = (
        "import sys\n"
        "from transferlens.report import build_report\n"
        f"build_report({str(study)!r})\n"
        "layers = ('transferlens.train', 'transferlens.data', 'transferlens.models')\n"
        "print(sorted(name for name in sys.modules if name.startswith(layers)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_learning_curves_come_from_epochs_csv(tmp_path: Path) -> None:
    results = load_results(make_study(tmp_path / "study"))
    headline_runs = main_runs(results.get("runs"))
    epochs = results.get("epochs").copy()
    first = epochs.index[0]
    epochs.loc[first, "test_metric"] = float("nan")  # an epoch without a test score
    curves = learning_curves_frame(epochs, headline_runs)
    assert list(curves.columns) == ["target", "init", "run_id", "epoch", "test_metric"]
    assert set(curves["run_id"]) == set(headline_runs["run_id"])
    assert len(curves) == len(headline_runs) * 6 - 1
    near = curves[(curves["target"] == "near") & (curves["init"] == "PT")]
    assert near.groupby("run_id")["epoch"].max().tolist() == [5, 5]


def test_without_epochs_csv_the_training_section_says_so(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit={"epochs", *ANALYSIS_TABLES})
    page = read_page(build_report(study))
    assert "learning_curves.png" not in page.images
    assert "results/epochs.csv is missing or has no epoch of these runs" in page.text
    assert "80.0% (79.0%–81.0%, n=2)" in page.text  # the runs.csv table is still shown


def test_tasks_come_from_targets_csv(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit={"targets"})
    text = read_page(build_report(study)).text
    assert "70.0% (69.0%–71.0%, n=2)" in text  # far is an accuracy target without targets.csv
    # The study layer leaves a task empty until a run of the target has finished.
    (study / "results" / "targets.csv").write_text("target,task\nfar,\n", encoding="utf-8")
    assert "far (P-T 70.0% vs RI-T 67.0%)" in evidence(compute_findings(study), "pt_beats_rit")
    pd.DataFrame({"target": ["far"], "task": ["regression"]}).to_csv(
        study / "results" / "targets.csv", index=False
    )
    with pytest.raises(UserInputError, match=r"targets\.csv: task 'regression' of far"):
        compute_findings(study)


def test_default_image_hook_reads_the_saved_pngs(tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", omit=ANALYSIS_TABLES)
    images = fixture_images()
    for index in (3, 7):
        path = image_path(study / "results", "near", index)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(path)
    loaded = load_test_images(study, "near", [7, 3])
    assert loaded.dtype == np.uint8 and loaded.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(loaded, images[[7, 3]])
    grey = image_path(study / "results", "sketch", 0)
    grey.parent.mkdir(parents=True)
    Image.fromarray(images[0, ..., 0]).save(grey)  # a one-channel image stays one channel
    np.testing.assert_array_equal(
        load_test_images(study, "sketch", [0])[0, ..., 0], images[0, ..., 0]
    )
    with pytest.raises(ImagesUnavailable, match=r"images/near/5\.png is missing"):
        load_test_images(study, "near", [3, 5])


def test_missing_saved_images_are_reported_in_the_gallery(tmp_path: Path) -> None:
    kept = {"mistakes", "mistakes_examples"}
    study = make_study(tmp_path / "study", omit={"images", *(set(ANALYSIS_TABLES) - kept)})
    page = read_page(build_report(study))
    assert "Gallery of near not shown:" in page.text and "0.png is missing" in page.text
    assert not [src for src in page.images if src.startswith("gallery_")]
