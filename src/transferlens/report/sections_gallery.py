"""The mistakes section's galleries: the test images of each cell of a pair's 2 x 2 table,
one collapsed block per target and pair, naming the two runs whose predictions they show
(the first seed pair, :mod:`transferlens.report.seed_pairs`)."""

from __future__ import annotations

import pandas as pd

from transferlens.errors import UserInputError
from transferlens.report.blocks import (
    GalleryBlock,
    GalleryGroup,
    GalleryItem,
    NoteBlock,
    Section,
    SectionContext,
)
from transferlens.report.gallery import (
    CELL_ORDER,
    MAX_IMAGES_PER_CELL,
    ImagesUnavailable,
    cell_title,
    check_images,
    tile_png,
)
from transferlens.report.seed_pairs import PairMember, SeedTable, first_seed_pair, pair_order


def _gallery_group(
    ctx: SectionContext,
    target: str,
    pair: str,
    cell: str,
    chosen: pd.DataFrame,
    members: tuple[PairMember, PairMember],
) -> GalleryGroup:
    """Load and write the images of one cell (raises ImagesUnavailable)."""
    first, second = (member.label for member in members)
    indices = [int(index) for index in chosen["index"]]
    loaded = ctx.image_loader(ctx.results.study_dir, target, indices)
    images = check_images(loaded, len(indices), target)
    items = [
        GalleryItem(
            ctx.image(tile_png(image), f"gallery_{target}_{pair}_{cell}_{index}"),
            [
                f"test #{index}, label {label}",
                f"{first}: {guess_first}",
                f"{second}: {guess_second}",
            ],
        )
        for image, index, label, guess_first, guess_second in zip(
            images, indices, chosen["label"], chosen["pred_first"], chosen["pred_second"]
        )
    ]
    return GalleryGroup(f"{cell_title(first, second, cell)}: {len(items)} shown", items)


def _gallery_caption(target: str, members: tuple[PairMember, PairMember]) -> str:
    """Say whose test images these are and which two runs made the predictions."""
    first, second = members
    caption = (
        f"Test images of {target} from each cell of its 2 x 2 table above, with their "
        "test-set index, true label and both models' predictions. "
    )
    if first.run_id is None and second.run_id is None:
        return caption + "results/runs.csv does not name the runs, so their seeds are unknown."
    return caption + (
        "The examples come from the first seed pair (the lowest seeds among the complete "
        f"main runs of results/runs.csv): first = {first.described}, "
        f"second = {second.described}."
    )


def gallery_blocks(ctx: SectionContext, section: Section, seeds: SeedTable) -> None:
    """One collapsed gallery per target and pair (closed by default: they are long)."""
    examples = ctx.results.get("mistakes_examples")
    if examples is None:
        section.missing_note("mistakes_examples", "the gallery of test images")
        return
    for target in ctx.targets_in(examples):
        rows = examples[examples["target"] == target]
        for pair in pair_order(rows):
            members = first_seed_pair(seeds, target, pair)
            groups = []
            for cell in CELL_ORDER:
                chosen = rows[(rows["pair"] == pair) & (rows["cell"] == cell)]
                if chosen.empty:
                    continue
                try:
                    groups.append(
                        _gallery_group(
                            ctx, target, pair, cell, chosen.head(MAX_IMAGES_PER_CELL), members
                        )
                    )
                except (ImagesUnavailable, UserInputError, OSError) as error:
                    section.blocks.append(
                        NoteBlock(f"Gallery of {target} not shown: {error}", "warn")
                    )
                    return
            first, second = members
            section.blocks.append(
                GalleryBlock(
                    f"Test images of {target}, {pair}: {first.label} (first) vs "
                    f"{second.label} (second)",
                    _gallery_caption(target, members),
                    groups,
                )
            )
