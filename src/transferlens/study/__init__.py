"""Studies: a YAML grid of runs -> a content-hashed plan -> a run store -> executors.

``load_study`` validates a study file, ``plan_study`` expands it into runs named
``<kind>-<hash10>``, :class:`StudyStore` is the study folder (runs, locks, results),
``execute_plan`` trains what is missing with an executor (``local``, ``torchrun``,
``slurm``: :data:`transferlens.study.executors.EXECUTORS`), writes ``results/``
(runs.csv and the files beside it) and calls
``transferlens.study.analyses.run_analyses(plan, store)``.
"""

from transferlens.study.loading import load_study, parse_study
from transferlens.study.plan import Dependency, Plan, PlannedRun, RunMeta, plan_study, run_id_of
from transferlens.study.runner import RunReport, execute_plan, open_study, run_analyses_hook
from transferlens.study.runs_table import write_runs_table
from transferlens.study.spec import StudySpec
from transferlens.study.store import StudyStore

__all__ = [
    "Dependency",
    "Plan",
    "PlannedRun",
    "RunMeta",
    "RunReport",
    "StudySpec",
    "StudyStore",
    "execute_plan",
    "load_study",
    "open_study",
    "parse_study",
    "plan_study",
    "run_analyses_hook",
    "run_id_of",
    "write_runs_table",
]
