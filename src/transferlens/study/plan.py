"""A study expanded into its runs: fully resolved TrainSpecs named by their content.

The graph is: pre-training P (``source``) -> fine-tunes P-T (from checkpoint epochs
of P) and scratch runs RI-T (``target``) -> analyses -> report. Every run is a
:class:`~transferlens.train.TrainSpec` named ``<kind>-<hash10>``, where ``hash10`` is
the first 10 hex digits of the SHA-256 of its canonical JSON (keys sorted, no
whitespace) without the fields that only say *where* it runs (device, loader workers,
evaluation batch, the data folder) and the later-added fields that are switched off:
:meth:`TrainSpec.comparable`, what a resumed run must also match. A P-T run's ``init.run``
holds the source run's id (not a path), so its id changes exactly when the source
changes; the executor that trains it names the study's runs folder to find it in
(:meth:`StudyStore.runnable_spec`). The same spec always maps
to the same folder, and changing one setting renames only the runs it touches.

Sweeps overlap (the unshuffled run of the block sweep may equal the main run, the
final checkpoint of the checkpoint sweep is the main P-T run): identical specs are one
run, which then belongs to several ``groups``.

Each planned run also carries how it executes, outside its id: ``threads`` (the
study's ``threads_per_run``) and ``keep_epochs``, the checkpoints it keeps under
``keep_checkpoints: needed`` (:func:`kept_epochs`; None keeps every one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from transferlens.data.spec import DataSpec
from transferlens.errors import UserInputError
from transferlens.study.spec import ArmSettings, StudySpec
from transferlens.train.spec import FileInit, PretrainedInit, RandomInit, RunInit, TrainSpec
from transferlens.validation import validate

HASH_LENGTH = 10
GROUPS = ("source", "main", "block_shuffle", "pretrain_checkpoints")
Kind = Literal["source", "target"]
Init = Literal["", "PT", "RIT"]


@dataclass(frozen=True)
class RunMeta:
    """What a run is in the study (the columns of ``runs.csv`` besides its results)."""

    kind: Kind
    init: Init
    target: str
    seed: int
    block_size: int | None = None
    shuffle_seed: int | None = None
    pretrain_epoch: int | None = None
    augment: bool = True
    groups: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["groups"] = list(self.groups)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunMeta:
        return cls(**{**data, "groups": tuple(data.get("groups", ()))})

    def describe(self) -> str:
        """Short words for progress lines, e.g. ``PT real seed 0 block 4``."""
        words = [self.init or "P", self.target, f"seed {self.seed}"]
        if self.block_size is not None:
            words.append("pixel shuffle" if self.block_size == 0 else f"block {self.block_size}")
        if self.init == "PT" and self.pretrain_epoch is not None:
            words.append(f"from epoch {self.pretrain_epoch}")
        return " ".join(words)


@dataclass(frozen=True)
class Dependency:
    """A P-T run needs checkpoint ``epoch`` of run ``run_id``."""

    run_id: str
    epoch: int


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: its id, its spec (``init.run`` = a run id) and what it is.

    ``threads`` and ``keep_epochs`` say how it executes (CPU threads per training
    process; the checkpoints to keep, None = all): not part of its id.
    """

    run_id: str
    spec: TrainSpec
    meta: RunMeta
    depends_on: Dependency | None = None
    threads: int = 1
    keep_epochs: tuple[int, ...] | None = None

    @property
    def epochs(self) -> int:
        return self.spec.epochs


@dataclass
class Plan:
    """Every run of a study, in a stable order (the source first)."""

    study: StudySpec
    runs: dict[str, PlannedRun] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.runs.values())

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, run_id: str) -> PlannedRun:
        return self.runs[run_id]

    def select(self, *, group: str | None = None, **meta: Any) -> list[PlannedRun]:
        """Runs whose meta matches every given field (and belong to ``group`` if given).

        ``plan.select(init="PT", target="real", group="block_shuffle", block_size=4)``
        """
        chosen = []
        for run in self.runs.values():
            if group is not None and group not in run.meta.groups:
                continue
            if all(getattr(run.meta, key) == value for key, value in meta.items()):
                chosen.append(run)
        return chosen

    @property
    def source_run(self) -> PlannedRun | None:
        sources = self.select(kind="source")
        return sources[0] if sources else None

    def dependents(self, run_id: str) -> list[PlannedRun]:
        return [
            run for run in self.runs.values() if run.depends_on and run.depends_on.run_id == run_id
        ]

    def add(self, run: PlannedRun) -> PlannedRun:
        """Add ``run``, merging its groups into an identical run already planned."""
        existing = self.runs.get(run.run_id)
        if existing is None:
            self.runs[run.run_id] = run
            return run
        groups = existing.meta.groups + tuple(
            g for g in run.meta.groups if g not in existing.meta.groups
        )
        merged = replace(existing, meta=replace(existing.meta, groups=groups))
        self.runs[run.run_id] = merged
        return merged


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def run_id_of(kind: Kind, spec: TrainSpec) -> str:
    """``<kind>-<first 10 hex digits of sha256(canonical JSON of spec.comparable())>``."""
    digest = hashlib.sha256(canonical_json(spec.comparable()).encode("utf-8")).hexdigest()
    return f"{kind}-{digest[:HASH_LENGTH]}"


class _Planner:
    def __init__(self, study: StudySpec, source_name: str) -> None:
        self.study = study
        self.source_name = source_name
        self.plan = Plan(study)
        self.source_id: str | None = None

    def train_spec(
        self, arm_name: str, arm: ArmSettings, data: DataSpec, init: Any, seed: int
    ) -> TrainSpec:
        fields: dict[str, Any] = {
            "model": self.study.model.name,
            "model_kwargs": dict(self.study.model.kwargs),
            # None (derived map) is left out of the run id (TrainSpec.OFF_BY_DEFAULT).
            "model_modules": self.study.model.modules,
            "data": data.model_dump(mode="json"),
            "init": init.model_dump(mode="json"),
            "seed": seed,
            **arm.train_fields(),
        }
        return validate(TrainSpec, fields, f"{self.source_name}: training.{arm_name} (run spec)")

    def add(
        self, kind: Kind, spec: TrainSpec, meta: RunMeta, depends_on: Dependency | None
    ) -> None:
        self.plan.add(PlannedRun(run_id_of(kind, spec), spec, meta, depends_on))

    def add_source(self) -> None:
        study = self.study
        arm = study.training.pretrain
        assert study.source.data is not None and arm is not None
        data = study.source.data.model_copy(update={"augment": arm.augment})
        seed = study.source.seed
        spec = self.train_spec("pretrain", arm, data, RandomInit(), seed)
        meta = RunMeta(
            "source", "", study.source.label, seed, augment=arm.augment, groups=("source",)
        )
        self.source_id = run_id_of("source", spec)
        self.add("source", spec, meta, None)

    def pt_init(self, epoch: int | None) -> tuple[Any, Dependency | None]:
        source = self.study.source
        if self.source_id is not None:
            assert epoch is not None
            return RunInit(kind="run", run=self.source_id, epoch=epoch), Dependency(
                self.source_id, epoch
            )
        if source.weights is not None:
            return FileInit(kind="file", path=source.weights), None
        kwargs = source.pretrained if isinstance(source.pretrained, dict) else None
        return PretrainedInit(kind="pretrained", kwargs=kwargs), None

    def add_pair(
        self,
        label: str,
        data: DataSpec,
        seed: int,
        group: str,
        *,
        arms: Iterable[str] = ("PT", "RIT"),
        pretrain_epoch: int | None = None,
    ) -> None:
        """P-T and/or RI-T on ``data`` (whose augment/shuffle the caller has set)."""
        training = self.study.training
        block = data.block_size
        shuffle_seed = data.shuffle_seed if block is not None else None
        for init_name in arms:
            if init_name == "PT":
                assert training.pt is not None
                init, dependency = self.pt_init(pretrain_epoch)
                spec = self.train_spec("pt", training.pt, data, init, seed)
                epoch = pretrain_epoch if self.source_id is not None else None
            else:
                init, dependency, epoch = RandomInit(), None, None
                spec = self.train_spec("rit", training.rit, data, init, seed)
            meta = RunMeta(
                "target", init_name, label, seed, block, shuffle_seed, epoch, data.augment, (group,)
            )
            self.add("target", spec, meta, dependency)


def _final_epoch(study: StudySpec) -> int | None:
    return study.training.pretrain.epochs if study.pretrains and study.training.pretrain else None


def _normalised_block(size: int | None, image_size: int) -> int | None:
    # One block as large as the image is the identity permutation: the unshuffled data.
    return None if size == image_size else size


def walked_runs(plan: Plan) -> list[PlannedRun]:
    """The runs whose every checkpoint an analysis reads: the first seed's main P-T and
    RI-T run of each target (the criticality analysis's path through the checkpoints)."""
    first_seed = min(plan.study.seeds)
    return [
        run
        for run in plan.select(kind="target", group="main", seed=first_seed, block_size=None)
        if run.meta.init in ("PT", "RIT")
    ]


def kept_epochs(plan: Plan) -> dict[str, tuple[int, ...] | None]:
    """The checkpoints each run keeps under ``keep_checkpoints: needed`` (None: all).

    Epoch 0 (the init: criticality rewinds to it), the final epoch (every analysis),
    the epochs other runs start from (the pre-training checkpoint sweep), and every
    epoch of :func:`walked_runs` -- kept whether criticality is requested or not, as an
    analysis can be added to a finished study but a deleted checkpoint cannot come back.
    Training also keeps its latest checkpoint until the next one, for resuming.
    """
    if plan.study.keep_checkpoints == "all":
        return {run.run_id: None for run in plan}
    started_from: dict[str, set[int]] = {}
    for run in plan:
        if run.depends_on is not None:
            started_from.setdefault(run.depends_on.run_id, set()).add(run.depends_on.epoch)
    walked = {run.run_id for run in walked_runs(plan)}
    return {
        run.run_id: None
        if run.run_id in walked
        else tuple(sorted({0, run.epochs} | started_from.get(run.run_id, set())))
        for run in plan
    }


def _with_execution_settings(plan: Plan) -> Plan:
    """Every run with its thread count and kept checkpoints (see the module docstring)."""
    keep = kept_epochs(plan)
    threads = plan.study.threads_per_run
    for run_id, run in plan.runs.items():
        plan.runs[run_id] = replace(run, threads=threads, keep_epochs=keep[run_id])
    return plan


def plan_study(study: StudySpec, source_name: str = "study") -> Plan:
    """Expand a validated study into its runs (see the module docstring).

    Order: the source run; the main grid (each target x seed: P-T from P's final
    epoch, RI-T); the block-shuffle sweep (target x block size x seed x arm); the
    pre-training-checkpoint sweep (target x epoch x seed, P-T only).
    """
    planner = _Planner(study, source_name)
    training = study.training
    if training.pt is None:
        raise UserInputError(f"{source_name}: training.pt: required (the P-T arm's settings)")
    if study.pretrains:
        planner.add_source()
    final = _final_epoch(study)
    for target in study.targets:
        for seed in study.seeds:
            for init_name, arm in (("PT", training.pt), ("RIT", training.rit)):
                data = target.data.model_copy(update={"augment": arm.augment})
                planner.add_pair(
                    target.label, data, seed, "main", arms=(init_name,), pretrain_epoch=final
                )
    sweep = study.block_shuffle
    if sweep is not None:
        seeds = sweep.seeds or study.seeds
        shuffle_seeds = sweep.shuffle_seeds or [1234 + index for index in range(len(seeds))]
        for label in sweep.targets:
            target = study.target(label)
            image_size = target.data.image_size or 0
            sizes = list(dict.fromkeys(_normalised_block(s, image_size) for s in sweep.block_sizes))
            for size in sizes:
                for seed, shuffle_seed in zip(seeds, shuffle_seeds):
                    update: dict[str, Any] = {"augment": sweep.augment, "block_size": size}
                    if size is not None:
                        update["shuffle_seed"] = shuffle_seed
                    data = target.data.model_copy(update=update)
                    planner.add_pair(label, data, seed, "block_shuffle", pretrain_epoch=final)
    checkpoints = study.pretrain_checkpoints
    if checkpoints is not None and final is not None:
        epochs = list(dict.fromkeys(final if e == "final" else e for e in checkpoints.epochs))
        assert training.pt is not None
        for label in checkpoints.targets:
            data = study.target(label).data.model_copy(update={"augment": training.pt.augment})
            for epoch in epochs:
                for seed in checkpoints.seeds or study.seeds:
                    planner.add_pair(
                        label,
                        data,
                        seed,
                        "pretrain_checkpoints",
                        arms=("PT",),
                        pretrain_epoch=epoch,
                    )
    return _with_execution_settings(planner.plan)
