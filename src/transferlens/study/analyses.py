"""A finished study -> the result tables of DESIGN.md, one CSV per analysis.

``run_analyses(plan, store)`` is called by the runner once every training run is
complete. Each analysis reads the finished run folders, calls the library in
:mod:`transferlens.analysis` and writes its tables atomically under
``<study>/results/``. Which runs play which role:

* P = the source run's final checkpoint; P-T and RI-T = the unshuffled ``main`` runs
  of each target (P-T from P's final epoch), one per seed;
* pairs over seeds: ``PT-PT`` and ``RIT-RIT`` every two different seeds, ``PT-RIT``
  every P-T seed with every RI-T seed, ``PT-P`` / ``RIT-P`` each seed with P; tables
  hold the mean over those combinations (and intervals where the analysis has them);
* everything is measured on the target's test split, except criticality's loss,
  which is on the training split in evaluation mode (Chatterji et al.; the paper).

An analysis whose inputs (run ids and settings) have not changed since its tables
were written is skipped (``results/analyses_manifest.json``), so a re-run is cheap.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from transferlens.errors import UserInputError
from transferlens.io import atomic_write_json, atomic_write_text
from transferlens.study.plan import Plan, PlannedRun
from transferlens.study.runs_table import RUNS_CSV, write_runs_table
from transferlens.study.store import StudyStore

MANIFEST = "analyses_manifest.json"

# Settings each analysis accepts in the study's ``analyses:`` section, with defaults.
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "reuse": {},
    "pretrain_checkpoints": {},
    "mistakes": {"n_bootstrap": 1000, "examples_per_cell": 12},
    "cka": {"layers": None, "n_bootstrap": 200, "max_examples": None, "matrix": True},
    "distance": {},
    "interpolation": {"points": 11, "max_examples": None},
    "criticality": {
        "n_noise": 10,
        "tolerance": 1.01,
        "alphas": 11,
        "sigmas": 11,
        "max_examples": 1024,
        "path_points": 6,
        "path_sigmas": [0.0, 0.05, 0.1, 0.2],
    },
}
ORDER = tuple(DEFAULT_SETTINGS)


def settings_for(name: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """The defaults of analysis ``name`` updated with the study's settings (unknown keys: error)."""
    defaults = DEFAULT_SETTINGS[name]
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(defaults) or "none"
        raise UserInputError(f"analyses.{name}: unknown setting {unknown[0]!r} (known: {known})")
    return {**defaults, **given}


@dataclass
class TargetModels:
    """The finished models of one target: P-T and RI-T by seed, and how to get its data."""

    target: str
    pt: dict[int, PlannedRun] = field(default_factory=dict)
    rit: dict[int, PlannedRun] = field(default_factory=dict)

    @property
    def reference_run(self) -> PlannedRun:
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
    def targets(self) -> dict[str, TargetModels]:
        """Complete unshuffled main runs, by target, P-T from P's final checkpoint only."""
        found: dict[str, TargetModels] = {}
        for run in self.plan.select(kind="target", group="main"):
            meta = run.meta
            if meta.block_size is not None or not self.store.is_complete(run.run_id):
                continue
            entry = found.setdefault(meta.target, TargetModels(meta.target))
            (entry.pt if meta.init == "PT" else entry.rit)[meta.seed] = run
        return found

    @cached_property
    def runs_frame(self) -> pd.DataFrame:
        """``results/runs.csv`` (written by :func:`run_analyses` before any analysis)."""
        path = Path(self.store.results_dir) / RUNS_CSV
        return pd.read_csv(path, dtype={"block_size": "Int64", "pretrain_epoch": "Int64"})

    def model(self, run: PlannedRun, epoch: int | str = "final") -> nn.Module:
        from transferlens.train import load_model

        key = (run.run_id, epoch)
        if key not in self._models:
            self._models[key] = load_model(self.store.run_dir(run.run_id), epoch).eval()
        return self._models[key]

    def loaders(self, target: str) -> Any:
        from transferlens.train import build_loaders

        if target not in self._loaders:
            self._loaders[target] = build_loaders(self.targets[target].reference_run.spec)
        return self._loaders[target]

    def test_loader(self, target: str, max_examples: int | None = None) -> DataLoader:
        return _limited(self.loaders(target).test, max_examples)

    def train_eval_loader(self, target: str, max_examples: int | None = None) -> DataLoader:
        loaders = self.loaders(target)
        base = loaders.train_eval if loaders.train_eval is not None else loaders.test
        return _limited(base, max_examples)

    def task(self, target: str) -> str:
        return self.loaders(target).splits.task


def _limited(loader: DataLoader, max_examples: int | None) -> DataLoader:
    """The first ``max_examples`` examples of ``loader``'s data set (a fixed, ordered subset)."""
    if max_examples is None or max_examples >= len(loader.dataset):
        return loader
    subset = Subset(loader.dataset, range(int(max_examples)))
    return DataLoader(subset, batch_size=loader.batch_size, shuffle=False)


def seed_pairs(
    first: dict[int, PlannedRun], second: dict[int, PlannedRun], same_arm: bool
) -> list[tuple[PlannedRun, PlannedRun]]:
    """Combinations of runs over seeds: i < j within one arm, every (i, j) across arms."""
    if same_arm:
        return [(first[i], first[j]) for i, j in itertools.combinations(sorted(first), 2)]
    return [(first[i], second[j]) for i in sorted(first) for j in sorted(second)]


def model_pairs(entry: TargetModels, names: Iterable[str]) -> dict[str, list[tuple[Any, Any]]]:
    """``{pair name: [(run or "P", run or "P"), ...]}`` for the pair names of DESIGN.md."""
    pairs: dict[str, list[tuple[Any, Any]]] = {}
    for name in names:
        if name == "PT-PT":
            pairs[name] = seed_pairs(entry.pt, entry.pt, True)
        elif name == "RIT-RIT":
            pairs[name] = seed_pairs(entry.rit, entry.rit, True)
        elif name == "PT-RIT":
            pairs[name] = seed_pairs(entry.pt, entry.rit, False)
        elif name == "PT-P":
            pairs[name] = [(run, "P") for _, run in sorted(entry.pt.items())]
        elif name == "RIT-P":
            pairs[name] = [(run, "P") for _, run in sorted(entry.rit.items())]
    return {name: combos for name, combos in pairs.items() if combos}


# --- the analyses: each returns {table name: DataFrame} ------------------------------------


def runs_in_group(runs: pd.DataFrame, group: str) -> pd.DataFrame:
    """Rows of runs.csv that belong to ``group`` (its ``groups`` column is ``;``-joined)."""
    groups = runs["groups"].fillna("").astype(str).str.split(";")
    return runs[groups.apply(lambda names: group in names)]


def analyse_reuse(context: StudyContext, settings: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """Feature reuse from the block-shuffle sweep's runs (the paper's "noaug" configs).

    Only the sweep's runs count, so that the unshuffled reference is trained exactly
    like the shuffled ones; a study without a sweep compares its main runs.
    """
    from transferlens.analysis import feature_reuse

    runs = runs_in_group(context.runs_frame, "block_shuffle")
    if runs.empty:
        runs = runs_in_group(context.runs_frame, "main")
    return {"reuse": feature_reuse(runs)}


def analyse_pretrain_checkpoints(
    context: StudyContext, settings: dict[str, Any]
) -> dict[str, pd.DataFrame]:
    from transferlens.analysis import pretrain_checkpoints

    runs = runs_in_group(context.runs_frame, "pretrain_checkpoints")
    return {"pretrain_checkpoints": pretrain_checkpoints(runs)}


def _keyed_models(context: StudyContext, pairs: dict[str, list[tuple[Any, Any]]]) -> dict:
    models: dict[str, nn.Module] = {}
    for combos in pairs.values():
        for run in itertools.chain.from_iterable(combos):
            key = "P" if run == "P" else run.run_id
            if key not in models:
                models[key] = context.model(context.source if run == "P" else run)
    return models


def _named_pairs(pairs: dict[str, list[tuple[Any, Any]]]) -> list[tuple[str, str, str]]:
    def key(run: Any) -> str:
        return "P" if run == "P" else run.run_id

    return [(name, key(a), key(b)) for name, combos in pairs.items() for a, b in combos]


def analyse_mistakes(context: StudyContext, settings: dict[str, Any]) -> dict[str, pd.DataFrame]:
    from transferlens.analysis import mistakes

    tables, examples = [], []
    for target, entry in context.targets.items():
        if context.task(target) != "multiclass":
            continue  # mistakes are defined on top-1 correctness
        pairs = model_pairs(entry, ("PT-PT", "PT-RIT", "RIT-RIT"))
        if not pairs:
            continue
        models = _keyed_models(context, pairs)
        loader = context.test_loader(target)
        result = mistakes(
            models, _named_pairs(pairs), loader=loader, n_bootstrap=settings["n_bootstrap"]
        )
        tables.append(result.to_frame().assign(target=target))
        predictions = {key: _predictions(model, loader) for key, model in models.items()}
        for name, combos in pairs.items():
            first, second = (_run_key(run) for run in combos[0])
            for cell in ("only_first_wrong", "only_second_wrong", "both_wrong"):
                chosen = result.indices(name, cell, first, second)[: settings["examples_per_cell"]]
                for index in chosen:
                    examples.append(
                        {
                            "target": target,
                            "pair": name,
                            "cell": cell,
                            "index": int(index),
                            "label": int(result.labels[index]),
                            "pred_first": int(predictions[first][index]),
                            "pred_second": int(predictions[second][index]),
                        }
                    )
    return {"mistakes": _concat(tables), "mistakes_examples": pd.DataFrame(examples)}


def _run_key(run: Any) -> str:
    return "P" if run == "P" else run.run_id


def _predictions(model: nn.Module, loader: DataLoader) -> np.ndarray:
    from transferlens.evaluation import predict

    logits, _ = predict(model, loader)
    return logits.argmax(dim=1).numpy()


def analyse_cka(context: StudyContext, settings: dict[str, Any]) -> dict[str, pd.DataFrame]:
    from transferlens.analysis import cka, cka_matrix

    tables, matrices = [], []
    for target, entry in context.targets.items():
        names = (
            ("PT-P", "PT-PT", "PT-RIT", "RIT-RIT")
            if context.source
            else ("PT-PT", "PT-RIT", "RIT-RIT")
        )
        pairs = model_pairs(entry, names)
        if not pairs:
            continue
        models = _keyed_models(context, pairs)
        loader = context.test_loader(target, settings["max_examples"])
        result = cka(
            models,
            loader,
            layers=settings["layers"],
            pairs=_named_pairs(pairs),
            n_bootstrap=settings["n_bootstrap"],
        )
        tables.append(result.to_frame().assign(target=target))
        if settings["matrix"]:
            for name in ("PT-PT", "RIT-RIT", "PT-RIT"):
                if name in pairs:
                    first, second = pairs[name][0]
                    matrix = cka_matrix(
                        models[_run_key(first)],
                        models[_run_key(second)],
                        loader,
                        settings["layers"],
                        settings["layers"],
                        n_bootstrap=0,
                    ).to_frame()
                    matrices.append(matrix.drop(columns="pair").assign(target=target, pair=name))
    return {"cka": _concat(tables), "cka_matrix": _concat(matrices)}


def analyse_distance(context: StudyContext, settings: dict[str, Any]) -> dict[str, pd.DataFrame]:
    from transferlens.analysis import parameter_distance

    tables = []
    for target, entry in context.targets.items():
        names = ("PT-PT", "RIT-RIT", "PT-P", "RIT-P") if context.source else ("PT-PT", "RIT-RIT")
        for name, combos in model_pairs(entry, names).items():
            frames = []
            for first, second in combos:
                model_a = context.model(first)
                model_b = context.model(context.source) if second == "P" else context.model(second)
                frames.append(parameter_distance(model_a, model_b))
            mean = pd.concat(frames).groupby("module", sort=False)["l2"].mean().reset_index()
            tables.append(mean.assign(target=target, pair=name))
    return {"distance": _concat(tables)}


def analyse_interpolation(
    context: StudyContext, settings: dict[str, Any]
) -> dict[str, pd.DataFrame]:
    from transferlens.analysis import barrier, interpolation_curve, lambda_grid

    curves, barriers = [], []
    for target, entry in context.targets.items():
        loader = context.test_loader(target, settings["max_examples"])
        train_loader = context.train_eval_loader(target)
        for name, combos in model_pairs(entry, ("PT-PT", "PT-RIT", "RIT-RIT")).items():
            first, second = combos[0]  # the first two seeds: one curve per pair, as in the paper
            curve = interpolation_curve(
                context.model(first),
                context.model(second),
                loader,
                context.task(target),
                lams=lambda_grid(settings["points"]),
                train_loader=train_loader,
            )
            loss_barrier, metric_barrier = barrier(curve)
            curves.append(curve.assign(target=target, pair=name))
            barriers.append(
                {
                    "target": target,
                    "pair": name,
                    "loss_barrier": loss_barrier,
                    "metric_barrier": metric_barrier,
                }
            )
    return {"interpolation": _concat(curves), "barriers": pd.DataFrame(barriers)}


def analyse_criticality(context: StudyContext, settings: dict[str, Any]) -> dict[str, pd.DataFrame]:
    from transferlens.analysis import module_criticality
    from transferlens.analysis.criticality import path_grid
    from transferlens.train import available_epochs

    tables, paths = [], []
    alphas = np.linspace(0.0, 1.0, int(settings["alphas"])).tolist()
    sigmas = np.linspace(1e-16, 1.0, int(settings["sigmas"])).tolist()
    for target, entry in context.targets.items():
        train_loader = context.train_eval_loader(target, settings["max_examples"])
        test_loader = context.test_loader(target)
        task = context.task(target)
        for init, runs in (("PT", entry.pt), ("RIT", entry.rit)):
            if not runs:
                continue
            run = runs[min(runs)]  # the first seed, as the paper shows one model per init
            final, start = context.model(run), context.model(run, 0)
            table = module_criticality(
                final,
                start,
                train_loader,
                task,
                alphas=alphas,
                sigmas=sigmas,
                n_noise=int(settings["n_noise"]),
                tolerance=float(settings["tolerance"]),
                metric_loader=test_loader,
            )
            tables.append(table.assign(target=target, init=init))
            epochs = available_epochs(context.store.run_dir(run.run_id))
            checkpoints = [context.model(run, epoch).state_dict() for epoch in epochs]
            grid = path_grid(
                final,
                checkpoints,
                test_loader,
                task,
                module="conv1",
                n_points=int(settings["path_points"]),
                sigmas=[float(s) for s in settings["path_sigmas"]],
            )
            paths.append(grid.assign(target=target, init=init))
    return {"criticality": _concat(tables), "criticality_path": _concat(paths)}


ANALYSES: dict[str, Callable[[StudyContext, dict[str, Any]], dict[str, pd.DataFrame]]] = {
    "reuse": analyse_reuse,
    "pretrain_checkpoints": analyse_pretrain_checkpoints,
    "mistakes": analyse_mistakes,
    "cka": analyse_cka,
    "distance": analyse_distance,
    "interpolation": analyse_interpolation,
    "criticality": analyse_criticality,
}

# Leading columns of each table (DESIGN.md); analyses may add more after these.
LEADING = {
    "reuse": ("target", "block_size"),
    "pretrain_checkpoints": ("target", "pretrain_epoch"),
    "mistakes": ("target", "pair"),
    "mistakes_examples": ("target", "pair", "cell"),
    "cka": ("target", "pair", "layer"),
    "cka_matrix": ("target", "pair", "layer_a", "layer_b"),
    "distance": ("target", "pair", "module"),
    "interpolation": ("target", "pair", "lam"),
    "barriers": ("target", "pair"),
    "criticality": ("target", "init", "module"),
    "criticality_path": ("target", "init", "path"),
}


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _ordered(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    leading = [column for column in LEADING.get(name, ()) if column in frame.columns]
    return frame[leading + [column for column in frame.columns if column not in leading]]


def _fingerprint(context: StudyContext, name: str, settings: dict[str, Any]) -> str:
    """Hash of what an analysis reads: its settings and the finished runs it can see."""
    runs = sorted(run.run_id for run in context.plan if context.store.is_complete(run.run_id))
    payload = json.dumps({"name": name, "settings": settings, "runs": runs}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_analyses(
    plan: Plan, store: StudyStore, progress: Callable[[str], None] | None = None
) -> None:
    """Write every requested analysis's tables under ``<study>/results/`` (see module doc)."""
    requested = {name: settings_for(name, given) for name, given in plan.study.analyses.items()}
    write_runs_table(plan, store)
    context = StudyContext(plan, store)
    manifest_path = Path(store.results_dir) / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    torch.manual_seed(0)  # analyses draw their own seeded noise; this fixes anything else
    names = [name for name in ORDER if name in requested]
    for number, name in enumerate(names, 1):
        settings = requested[name]
        fingerprint = _fingerprint(context, name, settings)
        done = manifest.get(name, {})
        written = [Path(store.results_dir) / f"{table}.csv" for table in done.get("tables", [])]
        if done.get("fingerprint") == fingerprint and all(path.exists() for path in written):
            continue
        if progress:
            progress(f"[analysis {number}/{len(names)}] {name} ...")
        started = time.perf_counter()
        tables = ANALYSES[name](context, settings)
        for table, frame in tables.items():
            atomic_write_text(
                Path(store.results_dir) / f"{table}.csv", _ordered(table, frame).to_csv(index=False)
            )
        manifest[name] = {"fingerprint": fingerprint, "tables": sorted(tables)}
        atomic_write_json(manifest_path, manifest)
        if progress:
            seconds = time.perf_counter() - started
            progress(f"[analysis {number}/{len(names)}] {name} done in {seconds:.0f} s")
