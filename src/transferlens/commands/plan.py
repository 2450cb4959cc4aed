"""``transferlens plan STUDY.yaml``: the runs a study expands into, without running anything."""

from __future__ import annotations

import argparse

from transferlens.commands.study_args import add_study_arguments
from transferlens.study.loading import check_weights_source, path_problems
from transferlens.study.runner import open_study
from transferlens.study.status import plan_summary


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="list the runs of a study by kind and count (nothing is run)",
        description="Validate a study file and print its runs by arm and target, with how "
        "many are complete already. Missing data folders and weights files are reported, "
        "not errors; a weights file that does not load or fit the model is an error.",
    )
    add_study_arguments(parser)
    parser.add_argument("--list", action="store_true", help="also list every run")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    plan, store = open_study(
        args.study, out=args.out, data_root=args.data_root, require_paths=False
    )
    check_weights_source(plan.study, args.study)  # a file that is there must fit: exit 2
    print(plan_summary(plan, store, list_runs=args.list))
    for problem in path_problems(plan.study, args.study):
        print(f"note: {problem} (needed by 'transferlens run')")
    return 0
