"""CKA between models over a data loader (the paper's analysis 3), with bootstrap intervals.

* :func:`cka` -- the same layers of two models;
* :func:`cka_many` -- several models in one pass, compared in named pairs;
* :func:`cka_matrix` -- every layer of one model with every layer of another.

Estimator: :class:`~transferlens.analysis.cka_estimators.MinibatchCKA`, linear kernel, unbiased
HSIC_1 per batch summed over batches (Nguyen, Raghu & Kornblith 2021). It streams, so
data of any size works, and one pass of the loader serves every model: each model runs
one forward per batch and the HSIC of every pair of (model, layer) comes from one
matrix product. Batches of fewer than 4 examples are skipped (counted in the result).

Both models see the same batches in one pass; still the loader must not shuffle
(:func:`~transferlens.analysis.checks.check_ordered_loader`): a result's rows are the
examples in the loader's order, for every caller that pairs them with anything else.

Intervals: a percentile bootstrap over **batches** (the estimator's own units): the
per-batch HSIC matrices are kept, resampled batches are summed and turned into CKA.
This costs no extra forward pass and no Gram matrix; it treats batches as the
independent draws they are when the loader shuffles (or the data are exchangeable).
It needs 2 or more batches (NaN otherwise) and is only as fine as the number of
batches: use 20 or more for a meaningful interval (:mod:`.cka_bootstrap`).
``cka_many(..., matrices=True)`` also returns every layer against every layer for each
pair, from the same pass and the same resampled batches (no extra forward pass).

Permutation null (``n_permutations`` > 0): ``cka_p``, the p-value of a permutation
test of each CKA against rows permuted within each batch (:mod:`.cka_permutation`:
exact for this estimator; the pass keeps each batch's U-centred Grams, no forward pass
is repeated); NaN with ``n_permutations=0`` (the default: nothing is kept).

Pairs sharing a name (``PT-PT`` over several seed combinations) are averaged into one
row of :meth:`CKAResult.to_frame`: the mean of their CKA values, and the interval of
that mean under the same resampled batches (its ``cka_p`` under the null that permutes
every pair at once). ``to_frame(combine=False)`` keeps one row
per combination (with ``model_a``, ``model_b``).

Layers: names of :mod:`~transferlens.analysis.layer_specs` (``layer1``, ``fc:in``,
``encoder:out.last_hidden_state``); by default each stage's output and the
classifier's input from the model's module map
(:attr:`~transferlens.models.module_map.ModuleMap.cka_layers`). Token outputs
``[N, T, D]`` are read by ``tokens`` (``all``: the T*D values flattened, the default;
``cls``: token 0; ``mean``: the mean over tokens), recorded in ``settings``;
:meth:`CKAResult.layers_frame` says per layer what was compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from transferlens.analysis.checks import check_count, check_ordered_loader
from transferlens.analysis.cka_bootstrap import estimate
from transferlens.analysis.cka_estimators import MinibatchCKA
from transferlens.analysis.cka_kernels import ShiftedGram
from transferlens.analysis.cka_permutation import permutation_p_values
from transferlens.analysis.cka_result import CKAResult
from transferlens.analysis.features import stream_features
from transferlens.analysis.layer_specs import (
    Tokens,
    check_layers,
    check_tokens,
    resolve_layers,
)
from transferlens.analysis.pairs import resolve_pairs
from transferlens.analysis.stats import check_n_bootstrap
from transferlens.errors import UserInputError

if TYPE_CHECKING:
    from transferlens.models.module_map import ModuleMap


def _accumulate(
    models: Mapping[str, nn.Module],
    loader: Iterable,
    layers: Mapping[str, list[str]],
    keep_batch_terms: bool,
    device: Any,
    tokens: str,
    shapes: dict[str, dict[str, tuple[int, ...]]],
    keep_grams: bool = False,
) -> MinibatchCKA:
    """One pass: every (model, layer) becomes one row of a single MinibatchCKA.
    ``shapes`` is filled as in :func:`~transferlens.analysis.features.stream_features`."""
    accumulator = MinibatchCKA(
        sum(len(names) for names in layers.values()),
        keep_batch_terms=keep_batch_terms,
        keep_grams=keep_grams,
    )
    # Each layer's output becomes its Gram inside the forward (no batch of features is
    # held); on the CPU image batches run channels-last, read by the Grams as they lie.
    stream = stream_features(
        models,
        loader,
        layers,
        device=device,
        channels_last=True,
        reduce=ShiftedGram(),
        tokens=tokens,
        shapes=shapes,
    )
    for grams, _ in stream:
        accumulator.update_grams([gram for key in models for gram in grams[key]])
    accumulator.sync()
    accumulator.compute()  # raises a clear error when no batch was usable
    return accumulator


def _p_values(
    accumulator: MinibatchCKA,
    sizes: list[int],
    select: np.ndarray,
    pair_of: list[int],
    n_pairs: int,
    settings: dict[str, Any],
) -> dict[str, np.ndarray]:
    """``p`` and ``pair_p`` of the permutation null (NaN without draws)."""
    n_permutations = settings["n_permutations"]
    grams = accumulator.batch_grams() if n_permutations > 0 else []
    p, pair_p = permutation_p_values(
        grams, sizes, select, pair_of, n_pairs, n_permutations, settings["seed"]
    )
    return {"p": p, "pair_p": pair_p}


def _counts(accumulator: MinibatchCKA) -> dict[str, int]:
    return {
        "n_examples": accumulator.n_examples,
        "n_batches": accumulator.n_batches,
        "skipped_examples": accumulator.skipped_examples,
    }


def _settings(
    n_bootstrap: int, confidence: float, seed: int, tokens: str, n_permutations: int
) -> dict[str, Any]:
    check_n_bootstrap(n_bootstrap)
    check_count(n_permutations, "n_permutations", minimum=0)
    check_tokens(tokens)
    return {
        "n_bootstrap": n_bootstrap,
        "confidence": confidence,
        "seed": seed,
        "tokens": tokens,
        "n_permutations": n_permutations,
    }


def _shapes(
    shapes: Mapping[str, Mapping[str, tuple[int, ...]]], key: str, layers: Sequence[str]
) -> tuple[tuple[int, ...], ...]:
    seen = shapes.get(key, {})
    return tuple(seen.get(layer, ()) for layer in layers)


def cka(
    model_a: nn.Module,
    model_b: nn.Module,
    loader: Iterable,
    *,
    layers: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    device: str | torch.device | None = None,
    tokens: Tokens = "all",
    module_map: ModuleMap | None = None,
    n_permutations: int = 0,
) -> CKAResult:
    """CKA between the same layers of two models (one pair, named ``"a-b"``).

    ``layers`` must exist in both models; None: the ``cka_layers`` of ``module_map``
    (None: ``model_a``'s own map), each stage's output and the classifier's input.
    ``tokens``: ``all``, ``cls`` or ``mean`` (module docstring). Estimator,
    intervals and ``n_permutations`` (p-values): see the module docstring. Several
    models: :func:`cka_many`.
    """
    for name, model in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(model, nn.Module):
            raise UserInputError(
                f"cka: {name} is not a torch.nn.Module (got {type(model).__name__}); "
                "several models: cka_many({name: model}, loader)"
            )
    return cka_many(
        {"a": model_a, "b": model_b},
        loader,
        layers=layers,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        seed=seed,
        device=device,
        tokens=tokens,
        module_map=module_map,
        n_permutations=n_permutations,
    )


def cka_many(
    models: Mapping[str, nn.Module],
    loader: Iterable,
    *,
    pairs: Iterable[Sequence[str]] | None = None,
    layers: Sequence[str] | None = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    device: str | torch.device | None = None,
    tokens: Tokens = "all",
    module_map: ModuleMap | None = None,
    n_permutations: int = 0,
    matrices: bool = False,
) -> CKAResult:
    """CKA between the same layers of several pairs of models, in one pass of ``loader``.

    ``models`` maps names to modules; ``pairs`` are ``(pair name, first, second)`` names
    of ``models``, e.g. ``[("PT-PT", "PT0", "PT1"), ...]`` (several may share a pair
    name: see the module docstring); None: every two names, pair ``"<a>-<b>"``. Only
    the models named in a pair run. ``layers`` must exist in every model; None: the
    ``cka_layers`` of ``module_map`` (None: the first used model's own map). ``tokens``:
    ``all``, ``cls`` or ``mean`` (module docstring; ``cls`` is refused when the map
    says the model has no class token). ``n_permutations`` > 0: ``cka_p`` of each
    combination and pair name (module docstring). ``matrices``: also every layer against
    every layer for each combination and pair name, from the same pass and the same
    resampled batches (``result.matrices``, a ``kind="matrix"`` result without
    p-values; its diagonal is ``result`` itself). ``loader`` must not shuffle.
    """
    if not isinstance(models, Mapping):
        raise UserInputError(
            f"cka_many: models must be a mapping {{name: nn.Module}} (got {type(models).__name__}); "
            "two models: cka(model_a, model_b, loader)"
        )
    settings = _settings(n_bootstrap, confidence, seed, tokens, n_permutations)
    check_ordered_loader(loader, "cka")
    model_map = dict(models)
    if not model_map:
        raise UserInputError("no models to compare")
    for key, model in model_map.items():
        if not isinstance(model, nn.Module):
            raise UserInputError(
                f"model {key!r} is not a torch.nn.Module (got {type(model).__name__})"
            )
    keys = list(model_map)
    combos = resolve_pairs(keys, pairs)
    used = [key for key in keys if any(key in combo[1:] for combo in combos)]
    layers = resolve_layers(model_map[used[0]], layers, module_map, tokens)
    for key in used:
        check_layers(model_map[key], layers)
    model_map = {key: model_map[key] for key in used}
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    accumulator = _accumulate(
        model_map,
        loader,
        {key: layers for key in used},
        n_bootstrap > 0,
        device,
        tokens,
        shapes,
        keep_grams=n_permutations > 0,
    )
    offset = {key: i * len(layers) for i, key in enumerate(used)}
    select = np.array(
        [[(offset[a] + i, offset[b] + i) for i in range(len(layers))] for _, a, b in combos]
    )
    names = list(dict.fromkeys(name for name, _, _ in combos))
    pair_of = [names.index(name) for name, _, _ in combos]
    estimates = estimate(accumulator, select, pair_of, len(names), n_bootstrap, confidence, seed)
    sizes = [len(layers)] * len(used)
    p_values = _p_values(accumulator, sizes, select, pair_of, len(names), settings)
    common = {
        "pairs": tuple(combos),
        "layers_a": tuple(layers),
        "layers_b": tuple(layers),
        "pair_names": tuple(names),
        **_counts(accumulator),
        "shapes_a": _shapes(shapes, used[0], layers),
        "shapes_b": _shapes(shapes, used[0], layers),
    }
    matrix = None
    if matrices:
        # Every (model, layer) pair's HSIC is already in the one pass's [T, T] sums:
        # the matrices cost no forward pass, only another selection of cells.
        cells = np.array(
            [
                [
                    [(offset[a] + i, offset[b] + j) for j in range(len(layers))]
                    for i in range(len(layers))
                ]
                for _, a, b in combos
            ]
        )
        matrix = CKAResult(
            kind="matrix",
            **estimate(accumulator, cells, pair_of, len(names), n_bootstrap, confidence, seed),
            settings={**settings, "n_permutations": 0},
            **common,
        )
    return CKAResult(
        kind="layers", **estimates, settings=settings, **common, **p_values, matrices=matrix
    )


def cka_matrix(
    model_a: nn.Module,
    model_b: nn.Module,
    loader: Iterable,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    *,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    device: str | torch.device | None = None,
    tokens: Tokens = "all",
    module_map: ModuleMap | None = None,
    n_permutations: int = 0,
) -> CKAResult:
    """CKA of every layer of ``layers_a`` (in ``model_a``) with every one of ``layers_b``.

    ``model_b`` may be ``model_a`` itself (one forward per batch). Pair name ``"a-b"``;
    ``result.matrix`` is the ``[len(layers_a), len(layers_b)]`` array. None: the
    ``cka_layers`` of ``module_map`` (None: that model's own map). ``tokens`` and
    ``n_permutations``: as in :func:`cka_many` (the two sides are permuted apart even
    when ``model_b`` is ``model_a``).
    """
    settings = _settings(n_bootstrap, confidence, seed, tokens, n_permutations)
    check_ordered_loader(loader, "cka")
    layers_a = resolve_layers(model_a, layers_a, module_map, tokens)
    layers_b = resolve_layers(model_b, layers_b, module_map, tokens)
    models = {"a": model_a, "b": model_b}
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    accumulator = _accumulate(
        models,
        loader,
        {"a": layers_a, "b": layers_b},
        n_bootstrap > 0,
        device,
        tokens,
        shapes,
        keep_grams=n_permutations > 0,
    )
    offset = len(layers_a)
    select = np.array(
        [[[(i, offset + j) for j in range(len(layers_b))] for i in range(len(layers_a))]]
    )
    estimates = estimate(accumulator, select, [0], 1, n_bootstrap, confidence, seed)
    sizes = [len(layers_a), len(layers_b)]
    p_values = _p_values(accumulator, sizes, select, [0], 1, settings)
    return CKAResult(
        kind="matrix",
        pairs=(("a-b", "a", "b"),),
        layers_a=tuple(layers_a),
        layers_b=tuple(layers_b),
        pair_names=("a-b",),
        **estimates,
        **_counts(accumulator),
        settings=settings,
        shapes_a=_shapes(shapes, "a", layers_a),
        shapes_b=_shapes(shapes, "b", layers_b),
        **p_values,
    )
