"""A fabricated ``results/`` folder for the findings' verdicts, in three variants.

``make_findings_study(root, variant)`` writes what the study runner and the analyses
write for a study of two targets (``near`` closest to the source, then ``far``), with
``seeds`` per arm (three by default):

* ``runs.csv`` with the runner's ``groups`` column (``source``, ``main``,
  ``block_shuffle``, ``pretrain_checkpoints``): one row per run, i.e. per seed, of the
  main comparison, the block-shuffle sweep (pixel shuffle, block sizes 1 and 8; the main
  runs are its unshuffled reference) and the pre-training checkpoints (epochs 0, 2, 4;
  the main P-T runs are epoch 4);
* the pair analyses' summary tables (``mistakes``, ``cka``, ``distance``, ``barriers``:
  the mean over seed pairs) and their per-seed-pair tables (``*_pairs.csv``: target,
  pair, first_seed, second_seed, ...; an empty seed is the source model P);
* ``rewinding.csv`` and ``criticality.csv`` for every seed's model, ``module_map.csv``
  (lower units ``conv1``, ``layer1.0``), ``pretrain_checkpoints.csv``, ``targets.csv``
  and ``study.json``.

Variants (:data:`VARIANTS`): ``reproduced`` — every claim holds with a small spread;
``contradicted`` — every claim is reversed with a small spread (the block-shuffle claim
on its second half only: the gap shrinks, but P-T loses at the smallest block, as in the
demo); ``inconclusive`` — small effects in the paper's direction under a large spread.
Every number is a base value, plus the variant's effect, plus a per-seed jitter
(``jitter * (seed - mean seed)``), so means and spreads are known by construction.
``seeds=(0, 1)`` gives one same-arm pair (no spread across seed pairs);
``pair_tables=False`` writes a study folder from before the per-seed-pair tables;
``block_targets`` chooses the targets with a block-shuffle sweep.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from transferlens.results import table_path

VARIANTS = ("reproduced", "contradicted", "inconclusive")
TARGETS = ("near", "far")  # closest to the source first
SEEDS = (0, 1, 2)
UNITS = ("conv1", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "fc")
LOWER = ("conv1", "layer1.0")
LAYERS = ("layer1", "layer2", "layer3", "layer4")  # the CKA layers
BLOCK_SIZES = (0, 1, 8)  # pixel shuffle, the smallest block size, a larger one
PRETRAIN_EPOCHS = (0, 2, 4)
LAST_EPOCH = PRETRAIN_EPOCHS[-1]

# Mean final test metric (P-T, RI-T) of the main runs per target. Contradicted: RI-T wins
# on near, and the relative gap is larger on far than on the closest target.
FINALS = {
    "reproduced": {"near": (0.80, 0.55), "far": (0.70, 0.65)},
    "contradicted": {"near": (0.60, 0.62), "far": (0.80, 0.55)},
    "inconclusive": {"near": (0.70, 0.68), "far": (0.70, 0.69)},
}
# (P-T, RI-T) final metric and optimisation speed at the smallest block size (every target).
SMALLEST_BLOCK = {
    "reproduced": ((0.50, 0.45), (0.60, 0.50)),
    "contradicted": ((0.40, 0.48), (0.50, 0.60)),  # gap -20%: shrinks, but P-T loses
    "inconclusive": ((0.50, 0.49), (0.55, 0.54)),
}
# How far below the last checkpoint the best earlier one (epoch 2) ends.
PRETRAIN_SHORTFALL = {"reproduced": 0.0, "contradicted": 0.1, "inconclusive": 0.005}
# Jitter per seed of every run's metrics.
TRAINING_JITTER = {"reproduced": 0.001, "contradicted": 0.001, "inconclusive": 0.03}
# The effect and per-seed jitter of the pair, rewinding and criticality numbers, in units
# of each quantity's ``delta``.
EFFECT = {"reproduced": 1.0, "contradicted": -1.0, "inconclusive": 0.5}
JITTER = {"reproduced": 0.02, "contradicted": 0.02, "inconclusive": 0.5}

# (kind said to be higher, kind said to be lower, base, delta) of each pair statistic:
# higher = base + EFFECT * delta, lower = base.
KAPPA = ("PT-PT", "RIT-RIT", 0.5, 0.2)
KAPPA_RATIO = ("PT-PT", "RIT-RIT", 0.6, 0.2)
CKA = ("PT-PT", "RIT-RIT", 0.6, 0.2)
L2_WITHIN = ("RIT-RIT", "PT-PT", 20.0, 10.0)
L2_TO_P = ("RIT-P", "PT-P", 20.0, 10.0)
BARRIER = ("RIT-RIT", "PT-PT", 0.3, 0.2)
# Cost of rewinding a lower unit (RI-T said to lose more) and log10(1 + criticality) of the
# lower units (RI-T said to be higher): (P-T base, delta).
REWIND_COST = (0.25, 0.2)
LOG_CRITICALITY = (1.0, 1.0)


def offsets(seeds: Sequence[int]) -> dict[int, float]:
    """``seed - mean seed``: a jitter that leaves every mean as constructed."""
    centre = float(np.mean(seeds))
    return {seed: seed - centre for seed in seeds}


def pair_seeds(pair: str, seeds: Sequence[int]) -> list[tuple[int | None, int | None]]:
    """The seed pairs of a pair kind, as the analyses form them (P has no seed)."""
    first, _, second = pair.partition("-")
    if first == second:
        return list(itertools.combinations(seeds, 2))
    firsts = list(seeds)
    seconds: list[int | None] = [None] if second == "P" else list(seeds)
    return [(a, b) for a in firsts for b in seconds]


def pair_kind_values(
    spec: tuple[str, str, float, float], variant: str, seeds: Sequence[int]
) -> dict[str, dict[tuple[int | None, int | None], float]]:
    """``{kind: {(first_seed, second_seed): value}}`` of both kinds of ``spec``."""
    higher, lower, base, delta = spec
    jitter = offsets(seeds)
    out = {}
    for kind, mean in ((higher, base + EFFECT[variant] * delta), (lower, base)):
        out[kind] = {
            (a, b): mean + JITTER[variant] * delta * (jitter[a] + (0.0 if b is None else jitter[b]))
            for a, b in pair_seeds(kind, seeds)
        }
    return out


def expected_pair_mean(spec: tuple[str, str, float, float], variant: str, kind: str) -> float:
    higher, _, base, delta = spec
    return base + EFFECT[variant] * delta if kind == higher else base


def _write(results: Path, name: str, rows: list[dict], omit: set[str]) -> None:
    if name in omit or not rows:
        return
    pd.DataFrame(rows).to_csv(table_path(results, name), index=False)


def _summary(rows: list[dict], keys: list[str], values: list[str]) -> list[dict]:
    """A summary table's rows: the mean over seed pairs of ``values`` per ``keys``."""
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(keys, sort=False, dropna=False)
    summary = grouped[values].mean().reset_index()
    summary["n_pairs"] = grouped.size().to_numpy()
    return summary.to_dict("records")


def _run(run_id: str, init: str | None, target: str, seed: int, groups: str, **values) -> dict:
    row = dict(
        run_id=run_id, kind="target" if init else "source", init=init, target=target,
        seed=seed, block_size=None, pretrain_epoch=None, epochs=5, status="complete",
        shuffle_seed=None, augment=False, groups=groups, error=None,
    )  # fmt: skip
    row.update(values)
    row["best_test_metric"] = row.get("final_test_metric")
    return row


def finals(variant: str, target: str, init: str, seeds: Sequence[int]) -> dict[int, float]:
    """Final test metric of each main run (seed) of ``target`` and ``init``."""
    mean = FINALS[variant][target][0 if init == "PT" else 1]
    jitter = offsets(seeds)
    return {seed: mean + TRAINING_JITTER[variant] * jitter[seed] for seed in seeds}


def _runs(variant: str, seeds: Sequence[int], block_targets: Iterable[str]) -> list[dict]:
    jitter = {seed: TRAINING_JITTER[variant] * value for seed, value in offsets(seeds).items()}
    blocks = set(block_targets)
    rows = [_run("source-0", None, "source", 0, "source", final_test_metric=0.9,
                 optimization_speed=0.8)]  # fmt: skip
    for target in TARGETS:
        for init in ("PT", "RIT"):
            for seed, final in finals(variant, target, init, seeds).items():
                groups = ["main"] + (["block_shuffle"] if target in blocks else [])
                groups += ["pretrain_checkpoints"] if init == "PT" else []
                rows.append(
                    _run(f"main-{target}-{init}-{seed}", init, target, seed, ";".join(groups),
                         pretrain_epoch=LAST_EPOCH if init == "PT" else None,
                         final_test_metric=final, optimization_speed=final - 0.1)
                )  # fmt: skip
            if target in blocks:
                rows += _block_runs(variant, target, init, jitter)
        for seed, final in finals(variant, target, "PT", seeds).items():
            for epoch, drop in ((0, 0.3), (2, PRETRAIN_SHORTFALL[variant])):
                rows.append(
                    _run(f"ckpt-{target}-{epoch}-{seed}", "PT", target, seed,
                         "pretrain_checkpoints", pretrain_epoch=epoch,
                         final_test_metric=final - drop, optimization_speed=final - 0.1)
                )  # fmt: skip
    return rows


def _block_runs(variant: str, target: str, init: str, jitter: dict[int, float]) -> list[dict]:
    arm = 0 if init == "PT" else 1
    (metric, speed) = (pair[arm] for pair in SMALLEST_BLOCK[variant])
    rows = []
    for block in BLOCK_SIZES:
        # The pixel shuffle and the larger block: between the smallest block and unshuffled.
        shift = {0: -0.1, 1: 0.0, 8: 0.05}[block]
        for seed, noise in jitter.items():
            rows.append(
                _run(f"block-{target}-{init}-{block}-{seed}", init, target, seed, "block_shuffle",
                     block_size=block, pretrain_epoch=LAST_EPOCH if init == "PT" else None,
                     shuffle_seed=1234 + seed, final_test_metric=metric + shift + noise,
                     optimization_speed=speed + shift + noise)
            )  # fmt: skip
    return rows


def _pair_rows(
    target: str, specs: dict[str, tuple[str, str, float, float]], variant: str,
    seeds: Sequence[int], extra: dict | None = None,
) -> list[dict]:  # fmt: skip
    """One row per seed pair of the kinds of ``specs`` (column name -> spec), the kinds of
    all specs being the same two, plus ``extra`` columns."""
    values = {column: pair_kind_values(spec, variant, seeds) for column, spec in specs.items()}
    kinds = next(iter(values.values()))
    rows = []
    for kind, by_pair in kinds.items():
        for a, b in by_pair:
            row = dict(target=target, pair=kind, first_seed=a, second_seed=b, **(extra or {}))
            for column, per_kind in values.items():
                row[column] = per_kind[kind][(a, b)]
            rows.append(row)
    return rows


def _mistakes(variant: str, seeds: Sequence[int]) -> list[dict]:
    rows = []
    for target in TARGETS:
        for row in _pair_rows(target, {"kappa": KAPPA, "kappa_ratio": KAPPA_RATIO}, variant, seeds):
            # The findings read kappa and kappa_ratio; the counts are placeholders.
            row.update(n=100, both_right=70, both_wrong=10, only_first_wrong=10,
                       only_second_wrong=10, accuracy_first=0.8, accuracy_second=0.8)  # fmt: skip
            row["kappa_max"] = row["kappa"] / row["kappa_ratio"]
            for name in ("kappa", "kappa_ratio"):
                row[f"{name}_low"], row[f"{name}_high"] = row[name] - 0.05, row[name] + 0.05
            rows.append(row)
    return rows


def _cka(variant: str, seeds: Sequence[int]) -> list[dict]:
    rows = []
    for target in TARGETS:
        for layer in LAYERS:
            for row in _pair_rows(target, {"cka": CKA}, variant, seeds, {"layer": layer}):
                row.update(cka_low=row["cka"] - 0.02, cka_high=row["cka"] + 0.02, cka_p=0.001)
                rows.append(row)
    return rows


def _distance(variant: str, seeds: Sequence[int]) -> list[dict]:
    rows = []
    for target in TARGETS:
        for spec in (L2_WITHIN, L2_TO_P):
            rows += _pair_rows(target, {"l2": spec}, variant, seeds, {"module": "all"})
    return rows


def _barriers(variant: str, seeds: Sequence[int]) -> list[dict]:
    rows = []
    for target in TARGETS:
        for align in ("none", "weights"):
            extra = {"align": align, "repair": False}
            for row in _pair_rows(target, {"metric_barrier": BARRIER}, variant, seeds, extra):
                row["loss_barrier"] = 2 * row["metric_barrier"]
                for name in ("loss_barrier", "metric_barrier"):
                    row[f"{name}_low"] = row[name] - 0.01
                    row[f"{name}_high"] = row[name] + 0.01
                rows.append(row)
    return rows


def model_values(
    base: float, delta: float, variant: str, seeds: Sequence[int]
) -> dict[str, dict[int, float]]:
    """``{init: {seed: value}}``: P-T = base, RI-T = base + effect, each jittered."""
    jitter = offsets(seeds)
    means = {"PT": base, "RIT": base + EFFECT[variant] * delta}
    return {
        init: {seed: mean + JITTER[variant] * delta * jitter[seed] for seed in seeds}
        for init, mean in means.items()
    }


def _rewinding(variant: str, seeds: Sequence[int]) -> list[dict]:
    """Rewinding each lower unit costs its model the constructed cost; others cost 0.02."""
    costs = model_values(*REWIND_COST, variant, seeds)
    rows = []
    for target in TARGETS:
        for init in ("PT", "RIT"):
            for seed, final in finals(variant, target, init, seeds).items():
                for unit in UNITS:
                    cost = costs[init][seed] if unit in LOWER else 0.02
                    rows.append(
                        dict(target=target, init=init, seed=seed, module=unit,
                             rewind_metric=final - cost, rewind_metric_low=final - cost - 0.02,
                             rewind_metric_high=final - cost + 0.02)
                    )  # fmt: skip
    return rows


def _criticality(variant: str, seeds: Sequence[int], rewinding: list[dict]) -> list[dict]:
    logs = model_values(*LOG_CRITICALITY, variant, seeds)
    rows = []
    for row in rewinding:
        log = logs[row["init"]][row["seed"]] if row["module"] in LOWER else 0.5
        rows.append(
            dict(target=row["target"], init=row["init"], module=row["module"],
                 rewind_metric=row["rewind_metric"], criticality=10.0**log - 1.0, alpha=0.5,
                 sigma=0.1, resolved=True, rewind_metric_low=row["rewind_metric_low"],
                 rewind_metric_high=row["rewind_metric_high"], epsilon=0.05, seed=row["seed"])
        )  # fmt: skip
    return rows


def _module_map() -> list[dict]:
    depths = [i / (len(UNITS) - 1) for i in range(len(UNITS))]
    return [
        dict(unit=unit, stage=unit.split(".")[0], depth=depth, lower=unit in LOWER, members=unit)
        for unit, depth in zip(UNITS, depths)
    ]


def _pretrain_table(runs: list[dict]) -> list[dict]:
    frame = pd.DataFrame(runs)
    frame = frame[frame["groups"].str.contains("pretrain_checkpoints", na=False)]
    means = frame.groupby(["target", "pretrain_epoch"], sort=False)[
        ["final_test_metric", "optimization_speed"]
    ].mean()
    return means.reset_index().to_dict("records")


def make_findings_study(
    root: Path,
    variant: str = "reproduced",
    seeds: Sequence[int] = SEEDS,
    block_targets: Iterable[str] = TARGETS,
    pair_tables: bool = True,
    omit: Iterable[str] = (),
) -> Path:
    """Write ``root/results/`` of ``variant`` (module docstring) and return ``root``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    omitted = set(omit)
    study = {
        "name": "findings fixture",
        "study": {"name": "findings-fixture", "source": {"label": "source"},
                  "targets": [{"label": target} for target in TARGETS]},
        "runs": [],
    }  # fmt: skip
    (results / "study.json").write_text(json.dumps(study, indent=2), encoding="utf-8")
    runs = _runs(variant, seeds, block_targets)
    rewinding = _rewinding(variant, seeds)
    pairs = {
        "mistakes": (_mistakes(variant, seeds), ["target", "pair"],
                     ["n", "both_right", "both_wrong", "only_first_wrong", "only_second_wrong",
                      "kappa", "kappa_low", "kappa_high", "kappa_max", "kappa_ratio"]),
        "cka": (_cka(variant, seeds), ["target", "pair", "layer"],
                ["cka", "cka_low", "cka_high", "cka_p"]),
        "distance": (_distance(variant, seeds), ["target", "pair", "module"], ["l2"]),
        "barriers": (_barriers(variant, seeds), ["target", "pair", "align", "repair"],
                     ["loss_barrier", "metric_barrier"]),
    }  # fmt: skip
    tables = {
        "runs": runs,
        "targets": [dict(target=target, task="multiclass") for target in TARGETS],
        "module_map": _module_map(),
        "rewinding": rewinding,
        "criticality": _criticality(variant, seeds, rewinding),
        "pretrain_checkpoints": _pretrain_table(runs),
    }
    for name, (rows, keys, values) in pairs.items():
        tables[name] = _summary(rows, keys, values)
        if pair_tables:
            tables[f"{name}_pairs"] = rows
    for name, rows in tables.items():
        _write(results, name, rows, omitted)
    return root
