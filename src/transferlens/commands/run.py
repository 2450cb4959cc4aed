"""``transferlens run STUDY.yaml``: train every run of a study, its analyses, its report.

Exit codes: 0 when every run is complete, the analyses succeeded and the report was
written (or skipped with ``--no-report``); 1 when a run is not complete, an analysis
failed or the report failed; 2 for bad input. A failed report exits 1 although the runs
and analyses are complete and saved: the command did not do all it was asked to, and a
script must see it. The message says so and how to write the report alone
(``transferlens report STUDY_DIR``), which reads only ``results/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transferlens.commands.study_args import add_study_arguments
from transferlens.errors import EXIT_FAILURE, EXIT_OK
from transferlens.study.executors import EXECUTORS
from transferlens.study.runner import RunReport, execute_plan, open_study
from transferlens.study.store import error_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train a study's runs (resuming, skipping complete ones), its analyses, its report",
        description="Validate, plan and run a study, then write its report "
        "(STUDY_DIR/report/index.html). Complete runs are never recomputed, interrupted ones "
        "resume; several runners may work on one study folder. Exit 1 if a run, an analysis "
        "or the report failed (the runs and tables that are done stay done).",
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
        "--jobs",
        type=int,
        help="runs at once per device (CPU default: cores // the study's threads_per_run)",
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
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="do not write the HTML report at the end (`transferlens report` writes it later)",
    )
    parser.set_defaults(handler=run)


def say(line: str) -> None:
    """A progress line: on stderr, so that stdout holds the summary alone."""
    print(line, file=sys.stderr, flush=True)


def write_report(study_dir: Path) -> tuple[Path | None, str | None]:
    """Build the study's report: ``(index.html, None)``, or ``(None, one-line error)``."""
    try:
        from transferlens.report import build_report

        return build_report(study_dir), None
    except Exception as error:  # noqa: BLE001 -- the run's own outcome must still be reported
        return None, error_line(error)


def report_step(report: RunReport, skip: bool) -> tuple[str, bool]:
    """The ``report:`` summary line and whether the report step succeeded."""
    rebuild = f"`transferlens report {report.study_dir}` writes it"
    if skip:
        return f"report: not written (--no-report); {rebuild}", True
    if not report.analyses_complete:
        return "report: not written: the runs or analyses are not complete", True
    index, error = write_report(report.study_dir)
    if error is not None:
        return (
            f"report: FAILED: {error} (the runs and analyses are complete and saved; "
            f"{rebuild} again)",
            False,
        )
    return f"report: {index}", True


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
        announce=say,
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
    report_line, report_ok = report_step(report, args.no_report)
    print(report_line)
    if not report.ok:
        missing = report.total - report.complete
        why = f"{missing} run(s) not complete" if missing else "the analyses failed"
        print(f"transferlens: {why}", file=sys.stderr)
        return EXIT_FAILURE
    if not report_ok:
        print("transferlens: the report failed", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
