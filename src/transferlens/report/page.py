"""Build the whole report folder: ``<study>/report/index.html`` plus its PNG figures.

Everything is read from ``<study>/results/`` (:func:`transferlens.report.tables.load_results`
and the gallery's saved images); the run folders are never opened. The sections are
:data:`SECTIONS`, in the order of the paper.
The folder is assembled in a staging folder beside the target and swapped into place
only when complete, so a reader sees the old report or the new one, never a half
written one. The page is self-contained: CSS inline, figures as files next to it, no
script and no network access.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import jinja2

from transferlens import __version__
from transferlens.errors import UserInputError
from transferlens.io import atomic_write_text, make_temp_folder
from transferlens.report.blocks import Section, SectionContext
from transferlens.report.findings import Finding, findings_from_results
from transferlens.report.gallery import ImageLoader, load_test_images
from transferlens.report.provenance import RUN_COLUMNS, Provenance, collect_provenance, total_time
from transferlens.report.sections_analysis import CKA, DISTANCE, INTERPOLATION, MISTAKES
from transferlens.report.sections_criticality import CRITICALITY
from transferlens.report.sections_model import MODULE_MAP
from transferlens.report.sections_training import PRETRAIN, REUSE, TRAINING
from transferlens.report.tables import StudyResults, load_results, ordered_targets, target_tasks
from transferlens.results import RESULTS_DIR

# In the order of the paper, then the network's module map (what "unit", "stage" and
# "lower modules" mean in the sections above).
SECTIONS = (
    TRAINING, REUSE, MISTAKES, CKA, DISTANCE, INTERPOLATION, CRITICALITY, PRETRAIN, MODULE_MAP,
)  # fmt: skip


def _template(name: str) -> str:
    return resources.files("transferlens.report").joinpath("templates", name).read_text("utf-8")


def render_page(
    *,
    title: str,
    results: StudyResults,
    targets: list[str],
    tasks: dict[str, str],
    findings: list[Finding],
    sections: list[Section],
    provenance: Provenance,
    lower_rule: str | None = None,
) -> str:
    """The HTML of the page (CSS inlined; every value escaped); ``lower_rule`` states which
    units are the lower modules, under the findings."""
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string(_template("index.html"))
    section_titles = {section.id: section.title for section in sections}
    return template.render(
        title=title,
        style=_template("style.css"),
        version=__version__,
        study_dir=str(results.study_dir),
        targets=targets,
        tasks=tasks,
        findings=findings,
        section_titles=section_titles,
        sections=sections,
        missing_tables=[f"results/{name}.csv" for name in results.missing],
        provenance=provenance,
        run_columns=RUN_COLUMNS,
        total_time=total_time(provenance),
        lower_rule=lower_rule,
    )


def _study_title(results: StudyResults) -> str:
    study = results.study or {}
    name = study.get("name") if isinstance(study.get("name"), str) else None
    return name or results.study_dir.resolve().name


def _swap_into_place(staging: Path, output: Path) -> None:
    """Replace ``output`` by ``staging`` (two renames; the old folder is removed after)."""
    old = None
    if output.exists():
        old = make_temp_folder(output.parent, f".{output.name}.old.")
        old.rmdir()
        output.rename(old)
    staging.rename(output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_report(
    study_dir: str | Path,
    output_dir: str | Path | None = None,
    image_loader: ImageLoader | None = None,
) -> Path:
    """Write the report of ``study_dir`` and return the path of its ``index.html``.

    Only ``<study_dir>/results/`` is read (:mod:`transferlens.results`): the run
    folders may be gone. ``output_dir`` defaults to ``<study_dir>/report``.
    ``image_loader(study_dir, target, indices) -> uint8 [n, H, W, C]`` supplies the
    gallery's test images (default: :func:`transferlens.report.gallery.load_test_images`).
    Sections whose tables are missing say so; a missing study folder, or one without
    ``results/``, is a UserInputError.
    """
    root = Path(study_dir)
    if not root.is_dir():
        raise UserInputError(f"{root}: study folder not found")
    if not (root / RESULTS_DIR).is_dir():
        raise UserInputError(f"{root}: not a study folder with results (no {RESULTS_DIR}/)")
    output = Path(output_dir) if output_dir is not None else root / "report"
    output.parent.mkdir(parents=True, exist_ok=True)
    results = load_results(root)
    targets = ordered_targets(results)
    tasks = target_tasks(results, targets)
    # Made with the user's umask (as every file the io helpers write): a report is shared.
    staging = make_temp_folder(output.parent, f".{output.name}.staging.")
    try:
        loader = image_loader if image_loader is not None else load_test_images
        ctx = SectionContext(results, targets, tasks, staging, loader)
        sections = [kind.build(ctx) for kind in SECTIONS]
        lower_rule = None  # stated under the findings when the rewinding finding is decided
        if ctx.units is not None and results.get("criticality") is not None:
            lower_rule = f"{ctx.units.lower_rule()} (units from {ctx.units.source})"
        html = render_page(
            title=_study_title(results),
            results=results,
            targets=targets,
            tasks=tasks,
            findings=findings_from_results(results),
            sections=sections,
            provenance=collect_provenance(
                results.study, results.get("runs"), results.get("provenance")
            ),
            lower_rule=lower_rule,
        )
        atomic_write_text(staging / "index.html", html)
        _swap_into_place(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output / "index.html"
