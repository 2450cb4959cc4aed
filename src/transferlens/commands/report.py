"""`transferlens report STUDY_DIR`: write the HTML report of a study and print its findings."""

from __future__ import annotations

import argparse
from pathlib import Path

from transferlens.errors import UserInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="HTML report (every figure and table) and the findings of a study",
        description=(
            "Write STUDY_DIR/report/index.html with its figures from STUDY_DIR/results/ "
            "alone (the run folders are not read); sections whose analysis was not run say "
            "so. Prints the table of the paper's findings."
        ),
    )
    parser.add_argument("study_dir", metavar="STUDY_DIR", help="the study folder (holds results/)")
    parser.add_argument(
        "--out", metavar="DIR", default=None, help="report folder (default: STUDY_DIR/report)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not print the findings table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from transferlens.report import (
        build_report,
        findings_from_results,
        findings_table,
        load_results,
    )

    study_dir = Path(args.study_dir)
    if not study_dir.is_dir():
        raise UserInputError(f"{study_dir}: study folder not found")
    index = build_report(study_dir, output_dir=args.out)
    if not args.quiet:
        print(findings_table(findings_from_results(load_results(study_dir))))
    print(f"report: {index}")
    return 0
