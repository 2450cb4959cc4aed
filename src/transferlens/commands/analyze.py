"""`transferlens analyze` (not written yet)."""

from __future__ import annotations

import argparse

from transferlens.errors import UserInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("analyze", help="(not available yet)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise UserInputError("'transferlens analyze' is not available in this build yet")
