"""The arguments every command that opens a study file takes (``plan``, ``run``)."""

from __future__ import annotations

import argparse


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """``STUDY`` (the YAML file), ``--out`` (the study folder) and ``--data-root``."""
    parser.add_argument("study", help="study YAML file (e.g. studies/demo.yaml)")
    parser.add_argument("--out", help="study folder (default: the study's output, runs/<name>)")
    parser.add_argument("--data-root", help="folder of the real data sets ($TRANSFERLENS_DATA)")
