"""Refactors keep results: the demo's result tables are bit-identical to the recorded ones.

``tests/data/demo_tables.json`` holds the SHA-256 of every result table of
``transferlens demo --fast`` (default suite) and ``transferlens demo`` (``-m slow``), run
as a user runs them (the CLI, in a fresh process). Bit-identity is promised only for the
same environment -- torch version, processor model, architecture -- so the check skips,
saying why, anywhere else. A change that means to change the numbers records the tables
again and says so in its commit:

    TRANSFERLENS_RECORD_DEMO_TABLES=1 pytest tests/test_demo_tables.py -m "slow or not slow"
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RECORD = Path(__file__).parent / "data" / "demo_tables.json"
RECORD_ENV = "TRANSFERLENS_RECORD_DEMO_TABLES"
# The tables whose values the demo computes (epochs.csv and provenance.csv hold wall times).
TABLES = (
    "runs",
    "reuse",
    "pretrain_checkpoints",
    "mistakes",
    "mistakes_examples",
    "cka",
    "cka_matrix",
    "distance",
    "interpolation",
    "barriers",
    "criticality",
    "criticality_path",
    "mistakes_pairs",
    "cka_pairs",
    "distance_pairs",
    "distance_stages",
    "barriers_pairs",
    "rewinding",
    "findings",
    "cka_matrix_pairs",
    "interpolation_pairs",
)


def processor() -> str:
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def environment() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "processor": processor(),
        "machine": platform.machine(),
        "cores": str(os.cpu_count()),
    }


def table_digests(results: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((results / f"{name}.csv").read_bytes()).hexdigest() for name in TABLES
    }


def run_demo(folder: Path, *flags: str) -> Path:
    code = "import sys; from transferlens.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", code, "demo", "--out", str(folder), "--no-progress", *flags]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return folder / "results"


def check_or_record(variant: str, results: Path) -> None:
    digests = table_digests(results)
    recorded = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    if os.environ.get(RECORD_ENV) == "1":
        if recorded.get("environment", environment()) != environment():
            recorded = {}  # a record holds one environment's tables
        recorded["environment"] = environment()
        recorded[variant] = digests
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        return
    if recorded.get("environment") != environment():
        pytest.skip(f"tables recorded in {recorded.get('environment')}, this is {environment()}")
    if variant not in recorded:
        pytest.skip(f"no tables recorded for the {variant} demo")
    changed = [name for name in TABLES if digests[name] != recorded[variant][name]]
    assert not changed, f"the {variant} demo's tables changed: {', '.join(changed)}"


def test_fast_demo_tables_are_the_recorded_ones(tmp_path: Path) -> None:
    check_or_record("fast", run_demo(tmp_path / "study", "--fast"))


@pytest.mark.slow
def test_full_demo_tables_are_the_recorded_ones(tmp_path: Path) -> None:
    check_or_record("full", run_demo(tmp_path / "study"))
