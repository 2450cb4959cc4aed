"""The report's "Module map" section: the network's units by stage, with their depth and
which are the lower modules (``results/module_map.csv``)."""

from __future__ import annotations

from transferlens.report.blocks import NoteBlock, Section, SectionContext, SectionKind, TableBlock
from transferlens.report.formatting import format_number


def _fill_module_map(ctx: SectionContext, section: Section) -> None:
    units = ctx.units
    assert units is not None and units.from_map  # the section runs only with the table
    table = ctx.results.tables["module_map"].sort_values("depth", kind="stable")
    section.blocks.append(
        NoteBlock(f"Rule: {units.lower_rule()} (the finding on rewinding averages over these).")
    )
    rows = [
        [
            str(row.stage), str(row.unit), format_number(row.depth),
            "yes" if bool(row.lower) else "", str(row.members).replace(";", ", "),
        ]
        for row in table.itertuples(index=False)
    ]  # fmt: skip
    section.blocks.append(
        TableBlock(
            "The units, input to output: each owns the parameters under its members "
            "(state-dict prefixes); distances, rewinding and criticality are per unit.",
            ["stage", "unit", "depth", "lower", "members"],
            rows,
        )
    )


MODULE_MAP = SectionKind(
    "module_map",
    "Module map",
    "How this study's network is cut into units (every parameter in exactly one) and stages "
    "from input to output. The depth of unit i of n is i/(n-1).",
    tables=("module_map",),
    fill=_fill_module_map,
    absent=(
        "results/module_map.csv is missing (a study written before module maps): units are "
        "the modules of the tables in their order, and the lower modules the first third "
        "of them."
    ),
)
