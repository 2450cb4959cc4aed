"""What a report section is made of (figures, tables, notes) and the context that builds them.

A :class:`SectionKind` declares a section (anchor, title, introduction, the tables it
shows) and the function that fills it from a :class:`SectionContext` (the loaded
tables, target order and tasks, the folder being written); a section whose tables are
all absent is "not run" without calling it. The page template renders the blocks in
order. A figure is written as a PNG next to
``index.html`` at once, atomically, and referenced by its file name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from transferlens.io import atomic_write_bytes
from transferlens.report.figures import figure_png
from transferlens.report.gallery import ImageLoader
from transferlens.report.tables import StudyResults
from transferlens.report.units import CkaLayers, StudyUnits, cka_layers, study_units


@dataclass
class FigureBlock:
    file: str
    caption: str
    alt: str
    number: int
    kind: str = "figure"


@dataclass
class TableBlock:
    caption: str
    header: list[str]
    rows: list[list[str]]
    kind: str = "table"


@dataclass
class NoteBlock:
    text: str
    level: str = "info"  # "info" or "warn"
    kind: str = "note"


@dataclass
class GalleryItem:
    file: str
    lines: list[str]


@dataclass
class GalleryGroup:
    """The images of one cell of the 2 x 2 mistakes table."""

    title: str
    items: list[GalleryItem]


@dataclass
class GalleryBlock:
    """Test images of one target and pair, grouped by cell, each with caption lines;
    the page shows it collapsed (a ``<details>`` whose summary is ``title``)."""

    title: str
    caption: str
    groups: list[GalleryGroup]
    kind: str = "gallery"

    @property
    def image_count(self) -> int:
        return sum(len(group.items) for group in self.groups)


Block = FigureBlock | TableBlock | NoteBlock | GalleryBlock


@dataclass
class Section:
    """One part of the page. ``not_run`` lists the result files whose absence emptied it."""

    id: str
    title: str
    intro: str
    blocks: list[Block] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return not self.not_run

    def missing_note(self, table: str, what: str) -> None:
        """Say inside the section that an optional table (``what`` it would show) is absent."""
        self.blocks.append(
            NoteBlock(f"Not run: results/{table}.csv is missing, so {what} is not shown.")
        )


@dataclass
class SectionContext:
    """What every section reads: the tables, the targets (closest first) and their tasks,
    the network's units and CKA layers (:mod:`transferlens.report.units`, read once), and
    the folder being written."""

    results: StudyResults
    targets: list[str]
    tasks: dict[str, str]
    out_dir: Path
    image_loader: ImageLoader
    figures_written: list[str] = field(default_factory=list)
    images_written: list[str] = field(default_factory=list)
    units: StudyUnits | None = None
    layers: CkaLayers | None = None

    def __post_init__(self) -> None:
        self.units = self.units or study_units(self.results)
        self.layers = self.layers or cka_layers(self.results)

    def unit_order(self) -> list[str] | None:
        return list(self.units.units) if self.units else None

    def unit_stages(self) -> dict[str, str | None] | None:
        """unit -> stage, when the module map names the stages."""
        if self.units is None or not self.units.from_map:
            return None
        return dict(zip(self.units.units, self.units.stages))

    def _file_name(self, name: str) -> str:
        """``<name>.png`` made safe for a URL and unique within the report."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "figure"
        taken = set(self.figures_written) | set(self.images_written)
        file_name, counter = f"{safe}.png", 1
        while file_name in taken:
            counter += 1
            file_name = f"{safe}_{counter}.png"
        return file_name

    def figure(
        self, figure: Figure, name: str, caption: str, alt: str | None = None
    ) -> FigureBlock:
        """Write ``figure`` as ``<name>.png`` and return the block that shows it."""
        file_name = self._file_name(name)
        atomic_write_bytes(self.out_dir / file_name, figure_png(figure))
        figure.clear()
        self.figures_written.append(file_name)
        return FigureBlock(file_name, caption, alt or caption, number=len(self.figures_written))

    def image(self, png: bytes, name: str) -> str:
        """Write ready PNG bytes as ``<name>.png`` and return the file name."""
        file_name = self._file_name(name)
        atomic_write_bytes(self.out_dir / file_name, png)
        self.images_written.append(file_name)
        return file_name

    def targets_in(self, table: pd.DataFrame) -> list[str]:
        """The targets that have rows in ``table``, closest to the source first."""
        return [target for target in self.targets if (table["target"] == target).any()]


@dataclass(frozen=True)
class SectionKind:
    """One section of the page: ``fill`` adds its blocks once one of ``tables`` is loaded.

    ``absent``: for a section that shows no analysis (the module map), the note shown
    when its tables are absent, instead of "not run".
    """

    id: str
    title: str
    intro: str
    tables: tuple[str, ...]
    fill: Callable[[SectionContext, Section], None]
    absent: str | None = None

    def build(self, ctx: SectionContext) -> Section:
        section = Section(self.id, self.title, self.intro)
        if any(ctx.results.get(name) is not None for name in self.tables):
            self.fill(ctx, section)
        elif self.absent is not None:
            section.blocks.append(NoteBlock(self.absent))
        else:
            section.not_run = [f"results/{name}.csv" for name in self.tables]
        return section
