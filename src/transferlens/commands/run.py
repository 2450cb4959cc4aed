"""``transferlens run STUDY.yaml``: train every run of a study, then its analyses."""

from __future__ import annotations

import argparse
import sys

from transferlens.commands.study_args import add_study_arguments
from transferlens.errors import EXIT_FAILURE, EXIT_OK
from transferlens.study.executors import EXECUTORS
from transferlens.study.runner import execute_plan, open_study


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train a study's runs (resuming, skipping complete ones), then its analyses",
        description="Validate, plan and run a study. Complete runs are never recomputed, "
        "interrupted ones resume; several runners may work on one study folder.",
    )
    add_study_arguments(parser)
    parser.add_argument(
        "--executor",
        choices=tuple(EXECUTORS),
        default="local",
        help="local worker processes, torchrun (every run multi-process) or slurm",
    )
    parser.add_argument(
        "--devices", help="cpu, auto, or GPU indices like 0,1,2,3 (default: the study's, else auto)"
    )
    parser.add_argument(
        "--jobs", type=int, help="runs at once per device (CPU default: cores // torch threads)"
    )
    parser.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="processes (devices) per run, launched with torchrun (default 1)",
    )
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    parser.add_argument("--partition", help="SLURM partition (overrides the study's)")
    parser.add_argument("--no-progress", action="store_true", help="plain log lines, no live view")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    plan, store = open_study(args.study, out=args.out, data_root=args.data_root)
    report = execute_plan(
        plan,
        store,
        executor=args.executor,
        devices=args.devices,
        jobs=args.jobs,
        nproc_per_node=args.nproc_per_node,
        retry_failed=args.retry_failed,
        progress=False if args.no_progress else None,
        partition=args.partition,
        source_file=str(args.study),
    )
    print(
        f"study {plan.study.name}: {report.complete}/{report.total} runs complete "
        f"({len(report.trained)} trained now) in {report.study_dir}"
    )
    for run_id, error in report.failed.items():
        print(f"  failed  {run_id}: {error}")
    for run_id, reason in report.blocked.items():
        print(f"  skipped {run_id}: {reason}")
    if report.failed:
        print("  (run again with --retry-failed to retry the failed runs)")
    print(f"analyses: {report.analyses}")
    if not report.ok:
        print(
            f"transferlens: {report.total - report.complete} run(s) not complete", file=sys.stderr
        )
        return EXIT_FAILURE
    return EXIT_OK
