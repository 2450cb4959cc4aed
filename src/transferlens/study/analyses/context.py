"""What every study adapter shares: the finished models and data of a study, by role.

* P = the source run's final checkpoint; P-T and RI-T = the study's main runs
  (:func:`transferlens.results.main_runs` on ``results/runs.csv``: unshuffled, P-T
  from P's final epoch), complete ones only, one per seed;
* pairs over seeds: ``PT-PT`` and ``RIT-RIT`` every two different seeds, ``PT-RIT``
  every P-T seed with every RI-T seed, ``PT-P`` / ``RIT-P`` each seed with P.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd
from torch import nn
from torch.utils.data import DataLoader, Subset

from transferlens.results import RESULTS_DIR, SOURCE, main_runs, seed_pairs, table_path

if TYPE_CHECKING:  # the study's modules import the analyses registry: no cycle at run time
    from transferlens.models.module_map import ModuleMap
    from transferlens.study.plan import Plan, PlannedRun
    from transferlens.study.store import StudyStore

# Hears one line per step of a long analysis (e.g. ``real PT module 3/6 conv1``).
Progress = Callable[[str], None]
Member = Any  # a PlannedRun, or SOURCE


@dataclass
class TargetModels:
    """The finished main runs of one target: P-T and RI-T by seed."""

    target: str
    pt: dict[int, PlannedRun] = field(default_factory=dict)
    rit: dict[int, PlannedRun] = field(default_factory=dict)

    @property
    def reference_run(self) -> PlannedRun:
        """The run whose data (test split, task) stands for the target's."""
        return next(iter(self.pt.values() or self.rit.values()))


class StudyContext:
    """Lazy access to a finished study's models and data, shared by every analysis."""

    def __init__(self, plan: Plan, store: StudyStore) -> None:
        self.plan = plan
        self.store = store
        self._models: dict[tuple[str, Any], nn.Module] = {}
        self._loaders: dict[str, Any] = {}

    @cached_property
    def source(self) -> PlannedRun | None:
        source = self.plan.source_run
        return source if source is not None and self.store.is_complete(source.run_id) else None

    @cached_property
    def runs_frame(self) -> pd.DataFrame:
        """``results/runs.csv`` (written by ``run_analyses`` before any analysis)."""
        path = table_path(self.store.root / RESULTS_DIR, "runs")
        return pd.read_csv(path, dtype={"block_size": "Int64", "pretrain_epoch": "Int64"})

    @cached_property
    def targets(self) -> dict[str, TargetModels]:
        """The complete main runs (:func:`~transferlens.results.main_runs`), by target."""
        found: dict[str, TargetModels] = {}
        main = main_runs(self.runs_frame)
        for run_id in main.loc[main["status"] == "complete", "run_id"]:
            run = self.plan.runs[str(run_id)]
            meta = run.meta
            entry = found.setdefault(meta.target, TargetModels(meta.target))
            (entry.pt if meta.init == "PT" else entry.rit)[meta.seed] = run
        return found

    def model_runs(self) -> list[str]:
        """The run ids of every model the analyses can load: P and the complete main runs."""
        ids = [
            run.run_id
            for entry in self.targets.values()
            for run in (*entry.pt.values(), *entry.rit.values())
        ]
        if self.source is not None:
            ids.append(self.source.run_id)
        return sorted(ids)

    @cached_property
    def module_map(self) -> ModuleMap | None:
        """The module map of the study's architecture (every model of a study shares it),
        derived once from the first main model, from the study's ``model: {modules:
        [...]}`` when given; None while no main run is complete."""
        import torch

        from transferlens.models.module_map import module_map
        from transferlens.train import load_model

        if not self.targets:
            return None
        reference = next(iter(self.targets.values())).reference_run
        modules = getattr(self.plan.study.model, "modules", None)
        # Loaded apart from the model cache, the global RNG left as it was: the analyses
        # load (and so build) their models exactly as before the map existed.
        with torch.random.fork_rng(devices=[]):
            model = load_model(self.store.run_dir(reference.run_id), "final")
        return module_map(model, modules)

    def model(self, run: PlannedRun, epoch: int | str = "final") -> nn.Module:
        from transferlens.train import load_model

        key = (run.run_id, epoch)
        if key not in self._models:
            self._models[key] = load_model(self.store.run_dir(run.run_id), epoch).eval()
        return self._models[key]

    def member_model(self, member: Member) -> nn.Module:
        """The final model of a pair member (a run, or :data:`SOURCE` for P)."""
        return self.model(self.source if member == SOURCE else member)

    def loaders(self, target: str) -> Any:
        from transferlens.train import build_loaders

        if target not in self._loaders:
            self._loaders[target] = build_loaders(self.targets[target].reference_run.spec)
        return self._loaders[target]

    def test_loader(self, target: str, max_examples: int | None = None) -> DataLoader:
        return limited(self.loaders(target).test, max_examples)

    def train_eval_loader(self, target: str, max_examples: int | None = None) -> DataLoader:
        loaders = self.loaders(target)
        base = loaders.train_eval if loaders.train_eval is not None else loaders.test
        return limited(base, max_examples)

    def task(self, target: str) -> str:
        return self.loaders(target).splits.task


def limited(loader: DataLoader, max_examples: int | None) -> DataLoader:
    """The first ``max_examples`` examples of ``loader``'s data set (a fixed, ordered subset)."""
    if max_examples is None or max_examples >= len(loader.dataset):
        return loader
    subset = Subset(loader.dataset, range(int(max_examples)))
    return DataLoader(subset, batch_size=loader.batch_size, shuffle=False)


def model_pairs(
    entry: TargetModels, names: Iterable[str]
) -> dict[str, list[tuple[Member, Member]]]:
    """``{pair name: [(member, member), ...]}`` for the pair names of DESIGN.md, by
    :func:`transferlens.results.seed_pairs` (empty ones left out)."""
    members = {
        "PT": [entry.pt[seed] for seed in sorted(entry.pt)],
        "RIT": [entry.rit[seed] for seed in sorted(entry.rit)],
        SOURCE: [SOURCE],
    }
    pairs = {name: seed_pairs(name, members) for name in names}
    return {name: combos for name, combos in pairs.items() if combos}


def member_key(member: Member) -> str:
    """A pair member's name in the analysis library's calls: its run id, or ``"P"``."""
    return SOURCE if member == SOURCE else member.run_id


def keyed_models(
    context: StudyContext, pairs: dict[str, list[tuple[Member, Member]]]
) -> dict[str, nn.Module]:
    """``{member key: final model}`` of every member of ``pairs``, in first-seen order."""
    models: dict[str, nn.Module] = {}
    for member in itertools.chain.from_iterable(itertools.chain.from_iterable(pairs.values())):
        key = member_key(member)
        if key not in models:
            models[key] = context.member_model(member)
    return models


def named_pairs(pairs: dict[str, list[tuple[Member, Member]]]) -> list[tuple[str, str, str]]:
    """``[(pair name, first key, second key), ...]`` as the analysis library takes them."""
    return [
        (name, member_key(a), member_key(b)) for name, combos in pairs.items() for a, b in combos
    ]


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The frames one below the other (an empty frame when there are none)."""
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
