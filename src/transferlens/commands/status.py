"""``transferlens status STUDY_DIR``: runs by state, failures, the analyses and report."""

from __future__ import annotations

import argparse

from transferlens.study.status import study_status
from transferlens.study.store import StudyStore


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "status",
        help="what is complete, running, pending and failed in a study folder",
        description="Runs by state (running ones with their last epoch, failed ones with "
        "their one-line error), a warning when the runs were trained in different "
        "environments (CPU threads, device, torch version), and where the analyses and "
        "the report stand.",
    )
    parser.add_argument("study_dir", help="the study folder (e.g. runs/demo)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(study_status(StudyStore(args.study_dir)))
    return 0
