"""Where a study's runs train: one :class:`Executor` protocol, one registry of executors.

``local``: worker processes on this machine, one per device slot; ``torchrun``: the
same slots, every run launched as ``--nproc-per-node`` processes with torchrun;
``slurm``: one SLURM job per run (submitit).
"""

from __future__ import annotations

from transferlens.errors import UserInputError
from transferlens.study.executors.local import LocalExecutor
from transferlens.study.executors.protocol import Executor, ExecutorFactory, ExecutorOptions
from transferlens.study.executors.slurm import SlurmExecutor
from transferlens.study.executors.torchrun import TorchrunExecutor
from transferlens.study.plan import Plan

EXECUTORS: dict[str, ExecutorFactory] = {
    "local": LocalExecutor.from_options,
    "torchrun": TorchrunExecutor.from_options,
    "slurm": SlurmExecutor.from_options,
}


def make_executor(name: str, plan: Plan, options: ExecutorOptions) -> Executor:
    """The executor ``name`` for ``plan`` (UserInputError naming ``--executor`` if unknown)."""
    factory = EXECUTORS.get(name)
    if factory is None:
        raise UserInputError(
            f"--executor: unknown executor {name!r} (known: {', '.join(EXECUTORS)})"
        )
    return factory(plan, options)


__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorOptions",
    "LocalExecutor",
    "SlurmExecutor",
    "TorchrunExecutor",
    "make_executor",
]
