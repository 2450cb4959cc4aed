"""``transferlens demo``: the whole paper in miniature, offline, on a CPU, in minutes.

Runs the packaged study ``studies/demo.yaml`` (``demo-fast.yaml`` with ``--fast``: the
same stages with fewer images and epochs) on the embedded synthetic domains with the
local executor, writes the report, and prints its path and the findings table.
Running it again reuses every finished run and analysis.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

from transferlens.errors import EXIT_FAILURE, EXIT_OK

DEFAULT_OUT = "transferlens-demo"


def demo_study_file(fast: bool) -> Path:
    """The packaged demo study (a real file: the package is never zipped)."""
    name = "demo-fast.yaml" if fast else "demo.yaml"
    return Path(str(resources.files("transferlens") / "studies" / name))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole paper in miniature on embedded synthetic domains (offline, CPU)",
        description="Pre-train on a synthetic source, fine-tune (P-T) and train from scratch "
        "(RI-T) on three synthetic targets, run the block-shuffle and pre-training-checkpoint "
        "sweeps and all seven analyses, write the HTML report and print the findings.",
    )
    parser.add_argument("--out", default=None, help=f"study folder (default ./{DEFAULT_OUT})")
    parser.add_argument(
        "--fast", action="store_true", help="fewer images and epochs, same stages (~1 minute)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="runs at once (default: cores)")
    parser.add_argument("--no-progress", action="store_true", help="plain log lines, no live view")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from transferlens.report import build_report, compute_findings, findings_table
    from transferlens.study.runner import execute_plan, open_study

    started = time.perf_counter()
    study_file = demo_study_file(args.fast)
    out = Path(args.out or (f"{DEFAULT_OUT}-fast" if args.fast else DEFAULT_OUT))
    plan, store = open_study(study_file, out=out)
    report = execute_plan(
        plan,
        store,
        executor="local",
        devices="cpu",
        jobs=args.jobs,
        progress=False if args.no_progress else None,
        source_file=str(study_file),
    )
    if not report.ok:
        for run_id, error in report.failed.items():
            print(f"failed {run_id}: {error}")
        print(
            f"demo: {report.total - report.complete} run(s) not complete; analyses: {report.analyses}"
        )
        return EXIT_FAILURE
    index = build_report(store.root)
    print(findings_table(compute_findings(store.root)))
    print(f"\nreport: {index}")
    print(
        f"demo finished in {time.perf_counter() - started:.0f} s ({len(report.trained)} runs trained now)"
    )
    return EXIT_OK
