"""``transferlens list models | datasets | analyses``: the names a spec may use, one a line.

Each name with a short description (from the registry; :mod:`transferlens.catalog`).
The keys of the train, data and study YAML files: ``docs/reference.md``.
"""

from __future__ import annotations

import argparse

from transferlens import catalog


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list the registered models, data sets or analyses",
        description="Print the names a spec may use (model, data.name, analyses:), one a "
        "line with a short description. Every YAML key and its default: docs/reference.md.",
    )
    parser.add_argument("kind", choices=catalog.KINDS, help="what to list")
    parser.set_defaults(handler=run)


def format_entries(entries: list[catalog.Entry]) -> str:
    """One line per entry: the name, padded to the longest, then its description."""
    width = max((len(entry.name) for entry in entries), default=0)
    lines = [f"{entry.name:<{width}}  {entry.description}".rstrip() for entry in entries]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    entries = catalog.entries(args.kind)
    print(format_entries(entries))
    return 0
