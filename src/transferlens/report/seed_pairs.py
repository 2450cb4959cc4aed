"""Which runs a pair of the model analyses compared, named for a reader.

The analyses between models (``mistakes``, ``cka``, ...) compare the study's main runs
(:func:`transferlens.results.main_runs`, complete ones) over seeds: ``PT-PT`` and
``RIT-RIT`` every two different seeds, the lower seed first; ``PT-RIT`` every P-T
seed with every RI-T seed; ``PT-P`` / ``RIT-P`` each seed with the source model P.
Their tables hold the mean over those seed pairs. The gallery's examples
(``mistakes_examples.csv``) come from the *first* seed pair: the lowest seeds, i.e.
the two lowest seeds of an arm for ``PT-PT`` / ``RIT-RIT``, the lowest P-T seed and
the lowest RI-T seed for ``PT-RIT``. The tables do not carry run ids, so this module
reads them from ``runs.csv`` by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from transferlens.results import PAIRS, SOURCE, main_runs
from transferlens.results import seed_pairs as pairs_of

MODEL_NAMES = {"PT": "P-T", "RIT": "RI-T", "P": "P"}


@dataclass(frozen=True)
class PairMember:
    """One model of a pair: its initialisation (``PT``, ``RIT`` or ``P``) and, for a
    target run, its seed and run id."""

    init: str
    seed: int | None = None
    run_id: str | None = None

    @property
    def label(self) -> str:
        """``P-T seed 0``, ``RI-T seed 1`` or ``P``."""
        name = MODEL_NAMES.get(self.init, self.init)
        return name if self.seed is None else f"{name} seed {self.seed}"

    @property
    def described(self) -> str:
        """The label with the run id: ``P-T seed 0 (run target-4d2ce713fa)``."""
        return self.label if self.run_id is None else f"{self.label} (run {self.run_id})"


# (target, init) -> [(seed, run_id), ...] sorted by seed
SeedTable = dict[tuple[str, str], list[tuple[int, str]]]


def seeds_by_model(runs: pd.DataFrame | None) -> SeedTable:
    """The complete main runs of each target and initialisation, sorted by seed.

    Empty when ``runs.csv`` is absent; runs without a seed are left out.
    """
    if runs is None or runs.empty:
        return {}
    main = main_runs(runs)
    if "status" in main.columns:
        main = main[main["status"] == "complete"]
    main = main[main["seed"].notna()]
    table: SeedTable = {}
    for (target, init), group in main.groupby(["target", "init"], sort=False):
        pairs = sorted(
            (int(seed), str(run_id)) for seed, run_id in zip(group["seed"], group["run_id"])
        )
        table[(str(target), str(init))] = pairs
    return table


def pair_order(frame: pd.DataFrame) -> list[str]:
    """The pairs of a table's ``pair`` column, in :data:`~transferlens.results.PAIRS` order
    (unknown names last, as they appear)."""
    present = list(dict.fromkeys(frame["pair"].dropna()))
    return [p for p in PAIRS if p in present] + [p for p in present if p not in PAIRS]


def pair_inits(pair: str) -> tuple[str, str]:
    """``("PT", "RIT")`` for ``PT-RIT``."""
    first, _, second = pair.partition("-")
    return first, second


def model_names(pair: str) -> tuple[str, str]:
    """``("P-T", "RI-T")`` for ``PT-RIT``."""
    first, second = pair_inits(pair)
    return MODEL_NAMES.get(first, first), MODEL_NAMES.get(second, second)


def _members(seeds: SeedTable, target: str, init: str) -> list[PairMember]:
    if init == SOURCE:
        return [PairMember(SOURCE)]
    return [PairMember(init, seed, run_id) for seed, run_id in seeds.get((target, init), [])]


def seed_pairs(seeds: SeedTable, target: str, pair: str) -> list[tuple[PairMember, PairMember]]:
    """Every (first, second) pair of models the analyses compared for ``pair``, in the
    analyses' order (so the first one is the gallery's)."""
    members = {init: _members(seeds, target, init) for init in pair_inits(pair)}
    return pairs_of(pair, members)


def first_seed_pair(seeds: SeedTable, target: str, pair: str) -> tuple[PairMember, PairMember]:
    """The pair of models of the gallery's examples; without ``runs.csv`` (or without the
    runs of ``pair``), members named by their initialisation only."""
    combos = seed_pairs(seeds, target, pair)
    if combos:
        return combos[0]
    first, second = pair_inits(pair)
    return PairMember(first), PairMember(second)


def table_labels(seeds: SeedTable, target: str, pair: str) -> tuple[str, str]:
    """Short names of the first and second model of ``pair``'s row of a table: the seeds
    when the row is one seed pair, else the initialisations (``first P-T`` /
    ``second P-T`` when both are the same)."""
    combos = seed_pairs(seeds, target, pair)
    if len(combos) == 1:
        return combos[0][0].label, combos[0][1].label
    first, second = model_names(pair)
    if first == second:
        return f"first {first}", f"second {second}"
    return first, second


def _seed_list(members: list[PairMember]) -> str:
    seeds = [str(member.seed) for member in members]
    name = MODEL_NAMES.get(members[0].init, members[0].init)
    if len(seeds) == 1:
        return f"{name} seed {seeds[0]}"
    return f"{name} seeds {', '.join(seeds)}"


def describe_pairs(seeds: SeedTable, target: str, pair: str) -> str:
    """Which models are first and second in ``pair``'s row of a table, e.g.
    ``P-T seed 0 (first) vs RI-T seed 0 (second)`` or, for several seed pairs,
    ``mean of 4 seed pairs: P-T seeds 0, 1 (first) x RI-T seeds 0, 1 (second)``."""
    combos = seed_pairs(seeds, target, pair)
    if not combos:
        first, second = model_names(pair)
        return f"{first} (first) vs {second} (second)"
    if len(combos) == 1:
        first, second = combos[0]
        return f"{first.label} (first) vs {second.label} (second)"
    first_init, second_init = pair_inits(pair)
    if first_init == second_init:
        members = list(dict.fromkeys(member for combo in combos for member in combo))
        return f"mean of {len(combos)} seed pairs of {_seed_list(members)}, the lower seed first"
    firsts = list(dict.fromkeys(first for first, _ in combos))
    seconds = list(dict.fromkeys(second for _, second in combos))
    return (
        f"mean of {len(combos)} seed pairs: {_seed_list(firsts)} (first) x "
        f"{_seed_list(seconds)} (second)"
    )
