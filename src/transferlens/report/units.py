"""The network's units, stages and lower modules, and the CKA layers, as ``results/`` records them.

``module_map.csv`` (unit, stage, depth, lower, members) is the study's module map: the
units every weight-space analysis reports, from input to output, each in a stage, and
the paper's "lower modules" (``lower``: depth below
:data:`~transferlens.results.LOWER_DEPTH`, unit ``i`` of ``n`` at depth ``i / (n - 1)``).
A study written before the map existed has no such table: its units are then the
rewound modules of ``criticality.csv`` (else the modules of ``distance.csv``) in their
order, and its lower modules follow the same rule
(:func:`transferlens.results.lower_units`; for a ResNet-10, ``conv1, layer1.0``).

``cka_layers.csv`` (layer, stage, depth, shape, reduction, features) says where each
compared layer sits and how its output was turned into features (``tokens=all``
flattens ``[T, D]`` tokens to ``T * D`` features); without it the layers keep the
order of ``cka.csv`` and no reduction is stated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pandas as pd

from transferlens.report.tables import StudyResults
from transferlens.results import LOWER_DEPTH, lower_units, unit_depths

MAP_SOURCE = "results/module_map.csv"
# The first unit is the one the criticality path walks when neither the study nor the
# map says otherwise: a ResNet's conv1 (studies written before the map).
DEFAULT_PATH_UNIT = "conv1"
WHOLE_NETWORK_ROWS = ("all", "network")  # distance.csv's and criticality.csv's totals


@dataclass(frozen=True)
class StudyUnits:
    """The units in model order with their stage, depth and the lower ones; ``source``
    says which table they were read from (for the report's statement of the rule)."""

    units: tuple[str, ...]
    stages: tuple[str | None, ...]
    depths: tuple[float, ...]
    lower: tuple[str, ...]
    source: str

    @property
    def from_map(self) -> bool:
        return self.source == MAP_SOURCE

    def stage_of(self, unit: str) -> str | None:
        return self.stages[self.units.index(unit)] if unit in self.units else None

    @property
    def stage_names(self) -> list[str]:
        """The stages from input to output (each once)."""
        return [stage for stage in dict.fromkeys(self.stages) if stage is not None]

    def order(self, names: Iterable[str]) -> list[str]:
        """``names`` in model order; names that are no unit follow in their given order."""
        names = list(dict.fromkeys(names))
        known = [unit for unit in self.units if unit in names]
        return known + [name for name in names if name not in self.units]

    def lower_rule(self) -> str:
        """The rule and its result, as the report states it."""
        bound = Fraction(LOWER_DEPTH).limit_denominator(100)
        rule = (
            f"lower modules = the units in the first third of the depth (unit i of n at "
            f"depth i/(n-1), depth < {bound})"
        )
        return f"{rule}: {', '.join(self.lower)}"


def study_units(results: StudyResults) -> StudyUnits | None:
    """The study's units from ``module_map.csv``, else from the analyses' tables (see the
    module docstring); None when no table names any unit."""
    table = results.get("module_map")
    if table is not None:
        table = table.sort_values("depth", kind="stable")
        units = tuple(str(unit) for unit in table["unit"])
        stages = tuple(None if pd.isna(stage) else str(stage) for stage in table["stage"])
        depths = tuple(float(depth) for depth in table["depth"])
        lower = tuple(unit for unit, low in zip(units, table["lower"]) if bool(low))
        return StudyUnits(units, stages, depths, lower, MAP_SOURCE)
    for name, column in (("criticality", "rewind_metric"), ("distance", "l2")):
        frame = results.get(name)
        if frame is None:
            continue
        names = table_units(frame[frame[column].notna()])
        if names:
            order = tuple(names)
            source = f"the module order of results/{name}.csv"
            stages = (None,) * len(order)
            return StudyUnits(
                order, stages, tuple(unit_depths(len(order))), tuple(lower_units(order)), source
            )
    return None


def table_units(frame: pd.DataFrame) -> list[str]:
    """The ``module`` column's names in order, the whole-network rows left out."""
    modules = dict.fromkeys(str(module) for module in frame["module"].dropna())
    return [module for module in modules if module not in WHOLE_NETWORK_ROWS]


def _study_spec(study: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The study spec inside ``study.json`` (under ``study`` as the runner writes it)."""
    if not isinstance(study, Mapping):
        return {}
    inner = study.get("study")
    return inner if isinstance(inner, Mapping) else study


def path_unit(results: StudyResults, paths: pd.DataFrame | None = None) -> str:
    """The unit the criticality path walks: the table's own ``module`` column when it has
    one, else the study's ``analyses.criticality.path_module``, else the map's first unit,
    else :data:`DEFAULT_PATH_UNIT`."""
    if paths is not None and "module" in paths.columns:
        named = list(dict.fromkeys(paths["module"].dropna()))
        if len(named) == 1:
            return str(named[0])
    analyses = _study_spec(results.study).get("analyses")
    criticality = analyses.get("criticality") if isinstance(analyses, Mapping) else None
    chosen = criticality.get("path_module") if isinstance(criticality, Mapping) else None
    if isinstance(chosen, str) and chosen:
        return chosen
    table = results.get("module_map")
    if table is not None:
        return str(table.sort_values("depth", kind="stable")["unit"].iloc[0])
    return DEFAULT_PATH_UNIT


@dataclass(frozen=True)
class CkaLayers:
    """``cka_layers.csv`` by layer: stage, depth, per-example shape, reduction, features."""

    table: pd.DataFrame  # indexed by layer

    def order(self, layers: Iterable[str]) -> list[str]:
        """``layers`` by depth (ties keep their order); layers it does not list follow."""
        layers = list(dict.fromkeys(layers))
        known = [layer for layer in layers if layer in self.table.index]
        depth = self.table["depth"]
        known = sorted(known, key=lambda layer: float(depth[layer]))
        return known + [layer for layer in layers if layer not in self.table.index]

    def labels(self) -> dict[str, str]:
        """``layer (stage)``, or the layer alone when it is in its stage by name
        (``blocks.2`` in ``blocks``, ``head:in`` in ``head``)."""
        out = {}
        for layer, stage in self.table["stage"].items():
            stage = None if pd.isna(stage) else str(stage)
            base = str(layer).split(":", 1)[0]
            plain = stage is None or base == stage or base.startswith(stage + ".")
            out[str(layer)] = str(layer) if plain else f"{layer} ({stage})"
        return out

    def reductions(self) -> dict[str, list[str]]:
        """reduction -> the layers reduced that way, in depth order."""
        out: dict[str, list[str]] = {}
        for layer in self.order(self.table.index):
            out.setdefault(str(self.table.loc[layer, "reduction"]), []).append(str(layer))
        return out


def cka_layers(results: StudyResults) -> CkaLayers | None:
    """``cka_layers.csv``, or None for a study written without it."""
    table = results.get("cka_layers")
    if table is None:
        return None
    return CkaLayers(table.drop_duplicates("layer").set_index("layer", drop=False))
