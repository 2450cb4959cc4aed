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
    results: StudyResults
    targets: list[str]
    tasks: dict[str, str]
    out_dir: Path
    image_loader: ImageLoader
    figures_written: list[str] = field(default_factory=list)
    images_written: list[str] = field(default_factory=list)

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
    """One section of the page: ``fill`` adds its blocks once one of ``tables`` is loaded."""

    id: str
    title: str
    intro: str
    tables: tuple[str, ...]
    fill: Callable[[SectionContext, Section], None]

    def build(self, ctx: SectionContext) -> Section:
        section = Section(self.id, self.title, self.intro)
        if all(ctx.results.get(name) is None for name in self.tables):
            section.not_run = [f"results/{name}.csv" for name in self.tables]
        else:
            self.fill(ctx, section)
        return section
