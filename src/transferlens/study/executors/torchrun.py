"""Multi-process (multi-GPU) runs: one run trained by N processes launched with torchrun.

:class:`TorchrunExecutor` (``--executor torchrun``) is the local executor with every
run launched this way; the local executor does the same for slots of several devices
(``--nproc-per-node N``). The local worker that claimed the run (and holds its lock)
launches::

    python -m torch.distributed.run --standalone --nproc-per-node N \\
        -m transferlens.study.executors.torchrun STUDY_DIR RUN_ID

Every process reads the run's planned spec, thread count and kept checkpoints from
``run.json`` and calls
``transferlens.train.train`` (a P-T source found in the study's runs folder), which joins torchrun's process group (NCCL on GPUs,
gloo on CPUs), shards each batch and lets rank 0 write the run folder. The worker
follows ``metrics.jsonl`` for progress. Processes die with their parent
(``PR_SET_PDEATHSIG``): killing the runner never leaves ranks writing to a run folder
that another runner may claim.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transferlens.study.executors.local import LocalExecutor
from transferlens.study.executors.processes import die_with_parent
from transferlens.study.plan import PlannedRun
from transferlens.study.store import StudyStore, one_line
from transferlens.train.run_dir import RUN_FILE, TORCHRUN_LOG, read_metrics

POLL_SECONDS = 1.0


class TorchrunExecutor(LocalExecutor):
    """The local executor's slots, every run launched as ``nproc`` torchrun processes."""

    always_torchrun = True


def torchrun_command(study_dir: str, run_id: str, nproc: int) -> list[str]:
    """The torchrun command line that trains ``run_id`` with ``nproc`` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "transferlens.study.executors.torchrun",
        study_dir,
        run_id,
    ]


def torchrun_launcher(nproc: int) -> Callable[..., None]:
    """A ``launch(store, run, on_epoch)`` for :func:`execute_run` using ``nproc`` processes,
    each with the run's planned thread count (``PlannedRun.threads``)."""

    def launch(
        store: StudyStore, run: PlannedRun, on_epoch: Callable[[int, dict[str, Any]], None] | None
    ) -> None:
        run_dir = store.run_dir(run.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        per_process = str(run.threads)
        env = {**os.environ, "OMP_NUM_THREADS": per_process, "MKL_NUM_THREADS": per_process}
        log_path = run_dir / TORCHRUN_LOG
        seen = len(read_metrics(run_dir))
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                torchrun_command(str(store.root), run.run_id, nproc),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # one process group: killed together below
                preexec_fn=die_with_parent,  # noqa: PLW1509 -- needed so ranks never outlive us
            )
            try:
                while process.poll() is None:
                    time.sleep(POLL_SECONDS)
                    seen = _report_epochs(run_dir, seen, on_epoch)
            finally:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        _report_epochs(run_dir, seen, on_epoch)
        if process.returncode != 0:
            raise RuntimeError(
                f"torchrun exited with code {process.returncode}: {_last_error(log_path)} "
                f"(log: {log_path})"
            )

    return launch


def _report_epochs(
    run_dir: Path, seen: int, on_epoch: Callable[[int, dict[str, Any]], None] | None
) -> int:
    """Pass the epoch records after the first ``seen`` to ``on_epoch``; the new count."""
    records = read_metrics(run_dir)
    if on_epoch is not None:
        for record in records[seen:]:
            on_epoch(int(record["epoch"]), record)
    return max(seen, len(records))


def _last_error(log_path: Path) -> str:
    """The most telling line of a failed torchrun log (the last exception line)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    lines = [line for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return one_line(line, 200)
    return one_line(lines[-1], 200) if lines else "no output"


def main(argv: Sequence[str] | None = None) -> int:
    """One torchrun process: train the run ``RUN_ID`` of ``STUDY_DIR`` (module docstring)."""
    die_with_parent()
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print(
            "usage: python -m transferlens.study.executors.torchrun STUDY_DIR RUN_ID",
            file=sys.stderr,
        )
        return 2
    study_dir, run_id = args
    import torch

    from transferlens.train import TrainSpec, train
    from transferlens.validation import validate

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    store = StudyStore(study_dir)
    record = json.loads((store.run_dir(run_id) / RUN_FILE).read_text(encoding="utf-8"))
    spec = validate(TrainSpec, record["spec"], str(store.run_dir(run_id) / RUN_FILE))
    keep = record.get("keep_epochs")
    try:
        train(store.runnable_spec(spec), store.run_dir(run_id), progress=False, keep_epochs=keep)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
