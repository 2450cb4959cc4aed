"""The result of the CKA functions of :mod:`.model_cka`: values, intervals, p-values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from transferlens.analysis.layer_specs import layers_frame
from transferlens.analysis.pairs import Pair

if TYPE_CHECKING:
    from transferlens.models.module_map import ModuleMap


@dataclass(frozen=True)
class CKAResult:
    """CKA per combination and per pair name.

    ``values``/``low``/``high`` have shape ``[combinations, *cells]`` and
    ``pair_values``/``pair_low``/``pair_high`` ``[pair names, *cells]``, where cells are
    ``[layers]`` (``kind="layers"``: the same layer in both models) or
    ``[layers_a, layers_b]`` (``kind="matrix"``). ``settings``: ``n_bootstrap``,
    ``confidence`` and ``seed`` of the intervals, ``n_permutations`` of the p-values,
    and ``tokens``. ``shapes_a`` / ``shapes_b``: the per-example shape of each layer's
    tensor (of the first model using it), before any reduction. ``p`` / ``pair_p``:
    permutation p-values shaped as ``values`` / ``pair_values`` (None: not computed).
    ``matrices``: for ``cka_many(..., matrices=True)``, the ``kind="matrix"`` result of
    the same combinations and pair names (every layer against every layer; None
    otherwise).
    """

    kind: Literal["layers", "matrix"]
    pairs: tuple[Pair, ...]
    layers_a: tuple[str, ...]
    layers_b: tuple[str, ...]
    values: np.ndarray
    low: np.ndarray
    high: np.ndarray
    pair_names: tuple[str, ...]
    pair_values: np.ndarray
    pair_low: np.ndarray
    pair_high: np.ndarray
    n_examples: int
    n_batches: int
    skipped_examples: int
    settings: dict[str, Any]
    shapes_a: tuple[tuple[int, ...], ...] = ()
    shapes_b: tuple[tuple[int, ...], ...] = ()
    p: np.ndarray | None = None
    pair_p: np.ndarray | None = None
    matrices: CKAResult | None = None

    @property
    def matrix(self) -> np.ndarray:
        """``[layers_a, layers_b]`` CKA of the first pair name (``cka_matrix`` has only one)."""
        if self.kind != "matrix":
            raise ValueError("matrix is defined for cka_matrix results; use to_frame()")
        return self.pair_values[0]

    def layers_frame(self, module_map: ModuleMap) -> pd.DataFrame:
        """What was compared at each layer of ``layers_a``: ``layer, stage, depth, shape,
        reduction, features`` (the ``cka_layers`` table; stage and depth of the layer's
        unit in ``module_map``, reduction ``flatten``, ``tokens=<tokens>`` or ``as is``)."""
        tokens = self.settings.get("tokens", "all")
        return layers_frame(self.layers_a, self.shapes_a, tokens, module_map)

    def to_frame(self, combine: bool = True) -> pd.DataFrame:
        """Tidy table: ``pair, layer, cka, cka_low, cka_high, cka_p`` (``layer_a,
        layer_b`` for a matrix); ``cka_p`` NaN when no permutation was drawn.

        ``combine=False``: one row per combination, with ``model_a`` and ``model_b``.
        """
        if combine:
            labels = [{"pair": name} for name in self.pair_names]
            p = self.pair_p if self.pair_p is not None else np.full_like(self.pair_values, np.nan)
            blocks = zip(labels, self.pair_values, self.pair_low, self.pair_high, p)
        else:
            labels = [{"pair": p, "model_a": a, "model_b": b} for p, a, b in self.pairs]
            p = self.p if self.p is not None else np.full_like(self.values, np.nan)
            blocks = zip(labels, self.values, self.low, self.high, p)
        rows = []
        for label, values, low, high, p_values in blocks:
            if self.kind == "layers":
                cells = [({"layer": layer}, (i,)) for i, layer in enumerate(self.layers_a)]
            else:
                cells = [
                    ({"layer_a": a, "layer_b": b}, (i, j))
                    for i, a in enumerate(self.layers_a)
                    for j, b in enumerate(self.layers_b)
                ]
            for cell, at in cells:
                rows.append(
                    {
                        **label,
                        **cell,
                        "cka": values[at],
                        "cka_low": low[at],
                        "cka_high": high[at],
                        "cka_p": p_values[at],
                    }
                )
        return pd.DataFrame(rows)
