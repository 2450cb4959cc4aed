"""``transferlens demo``: the whole paper in miniature, offline, on a CPU, in minutes.

Runs the packaged study ``studies/demo.yaml`` (``demo-fast.yaml`` with ``--fast``: the
same stages with fewer images and epochs) on the embedded synthetic domains with the
local executor, writes the report, and prints its path and the findings table.
Running it again reuses every finished run and analysis ("0 runs trained now").

Parallelism: one single-threaded worker per core, at most 8 (``--jobs`` to change it). Small
networks train faster as several one-thread processes than as one multi-thread
process, and the RI-T runs do not wait for pre-training, so they fill the other cores
while P trains.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib import resources
from pathlib import Path

from transferlens.errors import EXIT_FAILURE, EXIT_OK, UserInputError

DEFAULT_OUT = "transferlens-demo"


def demo_study_file(fast: bool) -> Path:
    """The packaged demo study (a real file: the package is never zipped)."""
    name = "demo-fast.yaml" if fast else "demo.yaml"
    return Path(str(resources.files("transferlens") / "studies" / name))


# Each worker holds its own torch and data (~1 GB resident); beyond this many the demo's
# dependency graph (P-T runs wait for P) leaves workers idle anyway.
MAX_DEFAULT_JOBS = 8


def default_jobs() -> int:
    """One worker per core, at most :data:`MAX_DEFAULT_JOBS` (each worker uses one thread)."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole paper in miniature on embedded synthetic domains (offline, CPU)",
        description="Pre-train on a synthetic source, fine-tune (P-T) and train from scratch "
        "(RI-T) on three synthetic targets, run the block-shuffle and pre-training-checkpoint "
        "sweeps and all seven analyses, write the HTML report and print the findings "
        "(about 9 minutes on 2 CPU cores).",
    )
    parser.add_argument("--out", default=None, help=f"study folder (default ./{DEFAULT_OUT})")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="fewer images and epochs, same stages (~40 s on 2 cores; a smoke test, not a result)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help=f"runs at once (default: one per core, at most {MAX_DEFAULT_JOBS})",
    )
    parser.add_argument("--no-progress", action="store_true", help="plain log lines, no live view")
    parser.set_defaults(handler=run)


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from transferlens.commands.run import write_report
    from transferlens.report import compute_findings, findings_table
    from transferlens.study.runner import execute_plan, open_study

    started = time.perf_counter()
    if args.jobs is not None and args.jobs < 1:
        raise UserInputError(f"--jobs: must be at least 1 (got {args.jobs})")
    study_file = demo_study_file(args.fast)
    out = Path(args.out or (f"{DEFAULT_OUT}-fast" if args.fast else DEFAULT_OUT))
    plan, store = open_study(study_file, out=out)
    report = execute_plan(
        plan,
        store,
        executor="local",
        devices="cpu",
        jobs=args.jobs or default_jobs(),
        progress=False if args.no_progress else None,
        source_file=str(study_file),
        announce=lambda header: _say(f"{header} and the report"),
    )
    if not report.ok:
        for run_id, error in report.failed.items():
            print(f"failed {run_id}: {error}")
        print(
            f"demo: {report.total - report.complete} run(s) not complete; "
            f"analyses: {report.analyses}"
        )
        return EXIT_FAILURE
    _say(f"analyses {report.analyses}; writing the report")
    index, error = write_report(store.root)
    if error is not None:
        print(
            f"demo: the report failed: {error} (`transferlens report {store.root}` retries it)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print(findings_table(compute_findings(store.root)))
    print(f"\nreport: {index}")
    print(
        f"demo finished in {time.perf_counter() - started:.0f} s "
        f"({len(report.trained)} runs trained now, {report.total - len(report.trained)} reused)"
    )
    return EXIT_OK
