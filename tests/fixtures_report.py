"""A small fabricated finished study for the report tests: its ``results/`` folder only.

``make_study(root, hold=True)`` writes numbers under which every finding of the paper
holds; ``hold=False`` changes them so that every finding fails on at least one
target. ``omit`` leaves tables out (analyses not run; ``"images"`` leaves out the
gallery's PNGs). The study folder holds ``results/`` and nothing else, as after its
run folders were deleted: every table of :mod:`transferlens.results`, ``study.json``
and ``images/<target>/<index>.png``. The targets are listed in ``study.json`` out of
order with a ``closeness`` rank (``near`` is closest), and ``far`` is a multi-label
(ROC-AUC) target in ``targets.csv``, so nothing may rely on names or order; runs.csv
carries the runner's ``groups`` column only when ``groups=True``. The gallery's test
images are :func:`fixture_images`; each has a magenta square so tests can find real
pixels. ``provenance.csv`` also names a folder the plan no longer lists
(:data:`ORPHAN_RUN`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from transferlens.results import image_path, table_path

TARGETS = ("near", "middle", "far")  # closest to the source first
TASKS = {"near": "multiclass", "middle": "multiclass", "far": "multilabel"}
MODULES = ("conv1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "fc")
NETWORK = "network"  # criticality.csv's whole-network row
LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")
BLOCK_SIZES = (None, 0, 1, 2, 4, 8)
PRETRAIN_EPOCHS = (0, 1, 2, 4)
SEEDS = (0, 1)
MAGENTA = (255, 0, 255)
N_IMAGES = 40
EPOCH_SECONDS = 1.5
# A run folder that runs.csv does not list (an abandoned plan); its digest is all digits.
ORPHAN_RUN = ("target-orphan0000", 2, 3.0, "000000000042")


def headline(hold: bool) -> dict[str, tuple[float, float]]:
    """Mean final test metric (P-T, RI-T) per target."""
    if hold:  # gaps 31.2%, 18.7%, 4.3%: largest on the closest target
        return {"near": (0.80, 0.55), "middle": (0.75, 0.61), "far": (0.70, 0.67)}
    # middle has the largest gap and far is won by RI-T
    return {"near": (0.70, 0.65), "middle": (0.75, 0.55), "far": (0.60, 0.65)}


def relative_gap(pt: float, rit: float) -> float:
    return 100.0 * (pt - rit) / pt


def kappa_from_counts(
    both_right: int, both_wrong: int, first_wrong: int, second_wrong: int
) -> float:
    """Cohen's kappa of two correct/incorrect vectors from their 2 x 2 counts."""
    n = both_right + both_wrong + first_wrong + second_wrong
    observed = (both_right + both_wrong) / n
    first_right = (both_right + second_wrong) / n
    second_right = (both_right + first_wrong) / n
    expected = first_right * second_right + (1 - first_right) * (1 - second_right)
    return (observed - expected) / (1 - expected)


def _write(root: Path, name: str, rows: list[dict], omit: set[str]) -> None:
    if name in omit:
        return
    path = table_path(root / "results", name)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def _runs(root: Path, hold: bool, omit: set[str]) -> None:
    rows = [
        dict(
            run_id="source-0000000000",
            kind="source",
            init=None,
            target=None,
            seed=0,
            block_size=None,
            pretrain_epoch=None,
            epochs=4,
            final_test_metric=0.9,
            best_test_metric=0.9,
            optimization_speed=0.8,
            status="complete",
        )
    ]
    epochs: list[dict] = []
    values = headline(hold)
    # Listed far first, so only study.json's closeness can put near first.
    for target in reversed(TARGETS):
        for init in ("PT", "RIT"):
            for seed in SEEDS:
                final = values[target][0 if init == "PT" else 1] + (0.01 if seed else -0.01)
                run_id = f"target-{target[:3]}{init.lower()}{seed}00"[:17]
                rows.append(
                    dict(
                        run_id=run_id,
                        kind="target",
                        init=init,
                        target=target,
                        seed=seed,
                        block_size=None,
                        pretrain_epoch=4 if init == "PT" else None,
                        epochs=5,
                        final_test_metric=final,
                        best_test_metric=final + 0.005,
                        optimization_speed=final - 0.1,
                        status="complete",
                    )
                )
                epochs.extend(_epochs(run_id, final, seed))
            # Runs of the checkpoint study and of block shuffling must not count as headline runs.
            rows.append(
                dict(
                    run_id=f"target-{target[:3]}{init.lower()}ck0",
                    kind="target",
                    init=init,
                    target=target,
                    seed=0,
                    block_size=1 if init == "RIT" else None,
                    pretrain_epoch=0 if init == "PT" else None,
                    epochs=5,
                    final_test_metric=0.3,
                    best_test_metric=0.3,
                    optimization_speed=0.2,
                    status="complete",
                )
            )
    _write(root, "runs", rows, omit)
    _write(root, "epochs", epochs, omit)
    _provenance(root, epochs, omit)


def _epochs(run_id: str, final: float, seed: int) -> list[dict]:
    """The rows of epochs.csv of one run: a learning curve rising to about ``final``."""
    rows = []
    for epoch in range(6):
        metric = final * (1 - 0.6 * np.exp(-epoch)) + 0.003 * seed
        rows.append(
            dict(
                run_id=run_id,
                epoch=epoch,
                test_metric=metric,
                test_loss=2 - metric,
                train_metric=min(1.0, metric + 0.05),
                train_loss=1.5 - metric,
                seconds=EPOCH_SECONDS,
            )
        )
    return rows


def _provenance(root: Path, epochs: list[dict], omit: set[str]) -> None:
    """provenance.csv: the runs with epochs (complete) and :data:`ORPHAN_RUN` (incomplete)."""
    logged = pd.DataFrame(epochs).groupby("run_id", sort=False)["seconds"].agg(["size", "sum"])
    rows = [
        dict(
            run_id=run_id,
            epochs_logged=int(count),
            train_seconds=float(seconds),
            spec_sha256=hashlib.sha256(run_id.encode()).hexdigest()[:12],
            complete=True,
        )
        for run_id, (count, seconds) in logged.iterrows()
    ]
    run_id, count, seconds, digest = ORPHAN_RUN
    rows.append(
        dict(
            run_id=run_id,
            epochs_logged=count,
            train_seconds=seconds,
            spec_sha256=digest,
            complete=False,
        )
    )
    _write(root, "provenance", rows, omit)


def _reuse(root: Path, hold: bool, omit: set[str]) -> None:
    rows = []
    values = headline(hold)
    for target in TARGETS:
        for block in BLOCK_SIZES:
            for seed in SEEDS:
                pt, rit = values[target]
                speed_pt, speed_rit = pt - 0.05, rit - 0.1
                if block is not None:
                    shrink = 1.0 if block == 0 else 0.5 + 0.05 * block
                    pt, rit = 0.40 * shrink + 0.1, 0.38 * shrink + 0.1
                    speed_pt, speed_rit = 0.5, 0.4
                    if not hold and block == 1 and target == "near":
                        rit = 0.10  # the gap grows instead of shrinking
                    if not hold and block == 1 and target == "far":
                        speed_pt = 0.3  # RI-T optimises faster
                jitter = 0.004 * seed
                pt, rit = pt + jitter, rit + jitter
                rows.append(
                    dict(
                        target=target,
                        block_size=block,
                        metric_pt=pt,
                        metric_rit=rit,
                        relative_gap=relative_gap(pt, rit),
                        speed_pt=speed_pt,
                        speed_rit=speed_rit,
                    )
                )
    _write(root, "reuse", rows, omit)


MISTAKE_COUNTS = {  # both_right, both_wrong, only_first_wrong, only_second_wrong
    "PT-PT": (70, 20, 5, 5),
    "PT-RIT": (55, 10, 15, 20),
    "RIT-RIT": (45, 15, 20, 20),
}


def _mistakes(root: Path, hold: bool, omit: set[str]) -> None:
    rows, examples = [], []
    for target in TARGETS:
        for pair, counts in MISTAKE_COUNTS.items():
            if not hold and target == "far" and pair == "RIT-RIT":
                counts = (72, 22, 3, 3)  # RI-T agree more than P-T
            kappa = kappa_from_counts(*counts)
            rows.append(
                dict(
                    target=target,
                    pair=pair,
                    n=sum(counts),
                    both_right=counts[0],
                    both_wrong=counts[1],
                    only_first_wrong=counts[2],
                    only_second_wrong=counts[3],
                    kappa=kappa,
                    kappa_low=kappa - 0.08,
                    kappa_high=kappa + 0.08,
                )
            )
        for offset, cell in enumerate(("only_first_wrong", "only_second_wrong", "both_wrong")):
            for k in range(4):
                index = (offset * 4 + k * 3) % N_IMAGES
                examples.append(
                    dict(
                        target=target,
                        pair="PT-RIT",
                        cell=cell,
                        index=index,
                        label=k,
                        pred_first=k if cell == "only_second_wrong" else k + 1,
                        pred_second=k if cell == "only_first_wrong" else k + 2,
                    )
                )
    _write(root, "mistakes", rows, omit)
    _write(root, "mistakes_examples", examples, omit)
    if "images" not in omit:
        _images(root, examples)


def _images(root: Path, examples: list[dict]) -> None:
    """Each example's test image as results/images/<target>/<index>.png."""
    images = fixture_images()
    for example in examples:
        path = image_path(root / "results", example["target"], example["index"])
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[example["index"]]).save(path)


CKA_BY_PAIR = {
    "PT-P": (0.62, 0.46, 0.29, 0.19, 0.05),
    "PT-PT": (0.90, 0.82, 0.61, 0.41, 0.16),
    "PT-RIT": (0.08, 0.06, 0.05, 0.04, 0.02),
    "RIT-RIT": (0.09, 0.07, 0.06, 0.05, 0.03),
}


def _cka(root: Path, hold: bool, omit: set[str]) -> None:
    rows, matrix = [], []
    for target in TARGETS:
        for pair, values in CKA_BY_PAIR.items():
            for position, (layer, value) in enumerate(zip(LAYERS, values)):
                if not hold and target == "far" and pair == "RIT-RIT" and layer == "layer4":
                    value = 0.5  # above PT-PT's 0.16 at the top stage
                rows.append(
                    dict(
                        target=target,
                        pair=pair,
                        layer=layer,
                        cka=value,
                        cka_low=max(0.0, value - 0.03),
                        cka_high=min(1.0, value + 0.03),
                    )
                )
                for other_position, other in enumerate(LAYERS):
                    near_diagonal = np.exp(-abs(position - other_position))
                    matrix.append(
                        dict(
                            target=target,
                            pair=pair,
                            layer_a=layer,
                            layer_b=other,
                            cka=float(value * near_diagonal),
                        )
                    )
    _write(root, "cka", rows, omit)
    _write(root, "cka_matrix", matrix, omit)


DISTANCE_ALL = {"PT-PT": 3.0, "RIT-RIT": 15.0, "PT-P": 2.5, "RIT-P": 17.0, "PT-RIT": 16.0}


def _distance(root: Path, hold: bool, omit: set[str]) -> None:
    rows = []
    for target in TARGETS:
        for pair, whole in DISTANCE_ALL.items():
            if not hold and target == "middle" and pair == "PT-P":
                whole = 20.0  # P-T far from P
            rows.append(dict(target=target, pair=pair, module="all", l2=whole))
            for position, module in enumerate(MODULES):
                rows.append(
                    dict(
                        target=target,
                        pair=pair,
                        module=module,
                        l2=whole / len(MODULES) * (1 + 0.2 * position),
                    )
                )
    _write(root, "distance", rows, omit)


BARRIERS = {"PT-PT": 0.01, "PT-RIT": 0.35, "RIT-RIT": 0.30}


def _interpolation(root: Path, hold: bool, omit: set[str]) -> None:
    rows, barriers = [], []
    values = headline(True)
    for target in TARGETS:
        for pair, barrier in BARRIERS.items():
            if not hold and target == "near" and pair == "PT-PT":
                barrier = 0.40
            ends = {"PT-PT": (0, 0), "PT-RIT": (0, 1), "RIT-RIT": (1, 1)}[pair]
            start, end = (values[target][e] for e in ends)
            for lam in np.linspace(0, 1, 11):
                metric = (1 - lam) * start + lam * end - barrier * 4 * lam * (1 - lam)
                rows.append(
                    dict(target=target, pair=pair, lam=lam, loss=2.0 - metric, metric=metric)
                )
            barriers.append(
                dict(target=target, pair=pair, loss_barrier=barrier, metric_barrier=barrier)
            )
    _write(root, "interpolation", rows, omit)
    _write(root, "barriers", barriers, omit)


def rewind_cost(init: str, module: str, hold: bool, target: str) -> float:
    """How much rewinding ``module`` lowers the metric of an ``init`` model."""
    lower = module.startswith(("conv1", "layer1"))
    if module == "fc":
        return 0.5
    if init == "PT":
        return 0.01 if lower else 0.05
    if not hold and target == "far":
        return 0.0 if lower else 0.1  # RI-T does not mind its lower modules being rewound
    return 0.25 if lower else 0.1


def _criticality(root: Path, hold: bool, omit: set[str]) -> None:
    rows, paths = [], []
    values = headline(hold)
    for target in TARGETS:
        for init in ("PT", "RIT"):
            final = values[target][0 if init == "PT" else 1]
            for module in MODULES:
                cost = rewind_cost(init, module, hold, target)
                rows.append(
                    dict(
                        target=target,
                        init=init,
                        module=module,
                        rewind_metric=final - cost,
                        criticality=0.05 + 40 * cost,
                        alpha=0.6,
                        sigma=0.3,
                    )
                )
            # The whole network, as the analysis writes it: the summed criticality, no
            # rewound metric (nothing was rewound), no alpha or sigma.
            network = sum(0.05 + 40 * rewind_cost(init, m, hold, target) for m in MODULES)
            rows.append(
                dict(
                    target=target,
                    init=init,
                    module=NETWORK,
                    rewind_metric=None,
                    criticality=network,
                    alpha=None,
                    sigma=None,
                )
            )
            for path in ("direct", "checkpoints"):
                for distance in np.linspace(0, 2.0, 6):
                    for sigma in np.linspace(0, 1, 6):
                        noise = np.exp(-((sigma * 2) ** 2))
                        decay = noise * (1 - 0.3 * (init == "RIT") * (2 - distance) / 2)
                        paths.append(
                            dict(
                                target=target,
                                init=init,
                                path=path,
                                distance=distance,
                                sigma=sigma,
                                metric=final * decay,
                            )
                        )
    _write(root, "criticality", rows, omit)
    _write(root, "criticality_path", paths, omit)


def pretrain_curve(hold: bool, target: str) -> tuple[float, ...]:
    """Final test metric per pre-training epoch of :data:`PRETRAIN_EPOCHS`."""
    if not hold and target == "far":
        return (0.55, 0.65, 0.72, 0.80)  # still climbing at the last checkpoint
    return (0.55, 0.75, 0.80, 0.80)


def _pretrain(root: Path, hold: bool, omit: set[str]) -> None:
    rows = []
    for target in TARGETS:
        for epoch, final in zip(PRETRAIN_EPOCHS, pretrain_curve(hold, target)):
            for seed in SEEDS:
                rows.append(
                    dict(
                        target=target,
                        pretrain_epoch=epoch,
                        final_test_metric=final + 0.002 * seed,
                        optimization_speed=final - 0.1,
                    )
                )
    _write(root, "pretrain_checkpoints", rows, omit)


def fixture_images() -> np.ndarray:
    """uint8 [N, 16, 16, 3]: a colour gradient per image with a magenta square."""
    rng = np.random.default_rng(0)
    images = np.zeros((N_IMAGES, 16, 16, 3), dtype=np.uint8)
    ramp = np.linspace(0, 200, 16, dtype=np.uint8)
    for index in range(N_IMAGES):
        images[index, ..., 0] = ramp[None, :]
        images[index, ..., 1] = ramp[:, None]
        images[index, ..., 2] = rng.integers(0, 120)
        top, left = rng.integers(0, 10, size=2)
        images[index, top : top + 6, left : left + 6] = MAGENTA
    return images


def make_study(root: Path, hold: bool = True, omit: Iterable[str] = ()) -> Path:
    """Write the ``results/`` folder of a finished study under ``root`` and return ``root``."""
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    omitted = set(omit)
    # study.json as the study runner writes it (the spec under "study"); closeness is the
    # report's optional key of a target.
    targets = [
        {"label": "far", "closeness": 3, "data": {"name": "synthetic"}},
        {"label": "near", "closeness": 1, "data": {"name": "synthetic"}},
        {"label": "middle", "closeness": 2, "data": {"name": "synthetic"}},
    ]
    study = {
        "name": "fixture study",
        "study": {"name": "fixture-study", "source": {"label": "source"}, "targets": targets},
        "runs": [],
    }
    (results / "study.json").write_text(json.dumps(study, indent=2), encoding="utf-8")
    tasks = [dict(target=entry["label"], task=TASKS[entry["label"]]) for entry in targets]
    _write(root, "targets", tasks, omitted)
    for write in (
        _runs,
        _reuse,
        _mistakes,
        _cka,
        _distance,
        _interpolation,
        _criticality,
        _pretrain,
    ):
        write(root, hold, omitted)
    return root
