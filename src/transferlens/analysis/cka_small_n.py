"""CKA of independent features at small n: biased CKA is inflated, debiased CKA is not.

For two independent representations the population CKA is 0, yet the biased estimator
(HSIC_0, Kornblith et al. 2019) sits near ``d / (n + d)`` for ``d`` isotropic Gaussian
features on both sides (``E ||X^T Y||_F^2 ~ n d^2`` against ``||X^T X||_F ~ n sqrt(d (1 +
d / n))``): far from 0 when ``n`` is not much larger than ``d`` (Murphy et al. 2024 make
the same point for small samples of high-dimensional features). The debiased estimator
(HSIC_1, Song et al. 2012; the per-batch estimator of minibatch CKA, Nguyen et al. 2021,
the one the study's tables use) is unbiased in its numerator and centred on 0.

:func:`independent_features_cka` measures both, and the study's minibatch estimator,
over seeded draws: the table of ``docs/cka.md`` (``tests/test_cka_small_n.py`` checks
that the page shows what this function returns).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from transferlens.analysis.cka_estimators import MinibatchCKA, linear_cka

# The study's evaluation batch (TrainSpec.eval_batch_size's default): minibatch CKA's
# batches in the tables.
STUDY_BATCH = 256


def independent_features_cka(
    ns: Sequence[int] = (32, 128, 1024),
    d: int = 64,
    draws: int = 10,
    seed: int = 0,
    batch_size: int = STUDY_BATCH,
) -> pd.DataFrame:
    """Linear CKA of independent standard Gaussian ``[n, d]`` features ``X`` and ``Y``.

    One row per ``n``: ``n, d, biased_mean, biased_sd, debiased_mean, debiased_sd,
    minibatch_mean, minibatch_sd`` over ``draws`` seeded draws (``sd`` with ddof 1);
    ``minibatch``: :class:`MinibatchCKA` over batches of ``batch_size`` (one batch, so
    the debiased value, when ``n <= batch_size``). Draw ``k`` of size ``n`` uses the
    generator seeded ``(seed, n, k)``: each row can be reproduced on its own.
    """
    rows = []
    for n in ns:
        values: dict[str, list[float]] = {"biased": [], "debiased": [], "minibatch": []}
        for draw in range(draws):
            rng = np.random.default_rng([seed, n, draw])
            x = torch.from_numpy(rng.standard_normal((n, d)))
            y = torch.from_numpy(rng.standard_normal((n, d)))
            values["biased"].append(linear_cka(x, y))
            values["debiased"].append(linear_cka(x, y, debiased=True))
            values["minibatch"].append(_minibatch(x, y, batch_size))
        row: dict[str, float] = {"n": n, "d": d}
        for name, found in values.items():
            row[f"{name}_mean"] = float(np.mean(found))
            row[f"{name}_sd"] = float(np.std(found, ddof=1)) if draws > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _minibatch(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    accumulator = MinibatchCKA(1, 1)
    for start in range(0, len(x), batch_size):
        accumulator.update([x[start : start + batch_size]], [y[start : start + batch_size]])
    return float(accumulator.compute()[0, 0])
