"""Inference across seeds: the unit of replication of every finding and table spread.

A study's models differ by their seed; a claim about P-T and RI-T models is a claim
about what training produces, so its evidence is replicated over seeds. The tools:

* :func:`seed_estimate` — a statistic of one arm's runs (one value per seed): the mean,
  its standard error ``sd / sqrt(k)`` and ``df = k - 1``.
* :func:`pair_estimate` — a statistic of *pairs* of runs (CKA, kappa, l2, a barrier),
  one value per seed pair. Pairs that share a run are not independent, so the standard
  error is the delete-one-run jackknife of the mean over pairs: leave each run out, take
  the mean over the pairs without it (``theta_i``), ``se^2 = (m - 1) / m * sum_i
  (theta_i - mean_i theta_i)^2`` over the ``m`` runs left out (the source model P is
  fixed, never left out); ``df = (runs of the smallest arm) - 1``. For pairs of one arm
  (``PT-PT``) this needs three seeds: with two there is one pair and no spread.
* :func:`jackknife` — the same for any statistic of several arms' runs (the relative
  gap ``100 (mean_PT - mean_RIT) / mean_PT``).
* :func:`difference` — ``a - b`` of two estimates from disjoint runs (independent):
  ``se^2 = se_a^2 + se_b^2``, Welch-Satterthwaite ``df``.

An estimate's interval is ``value +- t_{(1 + c) / 2, df} se``. :func:`decide` turns the
interval of an effect oriented so that positive means "as the paper says" into
``reproduced`` (the interval lies above 0), ``contradicted`` (below 0) or
``inconclusive``; :func:`seeds_to_decide` is the power estimate of an inconclusive one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
CONFIDENCE = 0.95
# The power estimate looks this far; beyond it the finding is called undecidable here.
MAX_SEEDS = 100


@dataclass(frozen=True)
class SeedEstimate:
    """A statistic over seeds: its value, standard error and degrees of freedom.

    ``se`` is NaN (and ``df`` 0) when the runs cannot measure a spread (one seed, or one
    pair of one arm); ``arms`` is the number of seeds of the smallest arm involved.
    """

    value: float
    se: float
    df: float
    arms: int

    @property
    def has_spread(self) -> bool:
        return bool(np.isfinite(self.se) and self.df >= 1)

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """``value +- t_{(1 + confidence) / 2, df} se`` (NaN bounds without a spread)."""
        if not self.has_spread:
            return math.nan, math.nan
        half = float(stats.t.ppf((1.0 + confidence) / 2.0, self.df)) * self.se
        return self.value - half, self.value + half

    def shifted(self, offset: float) -> SeedEstimate:
        """The estimate of ``statistic + offset`` (e.g. a non-inferiority margin)."""
        return SeedEstimate(self.value + offset, self.se, self.df, self.arms)

    def scaled(self, factor: float) -> SeedEstimate:
        """The estimate of ``factor * statistic``."""
        return SeedEstimate(self.value * factor, self.se * abs(factor), self.df, self.arms)


def seed_estimate(values: Sequence[float]) -> SeedEstimate:
    """Mean of one value per seed, ``se = sd / sqrt(k)`` (ddof 1), ``df = k - 1``."""
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    k = array.size
    if k == 0:
        return SeedEstimate(math.nan, math.nan, 0, 0)
    if k == 1:
        return SeedEstimate(float(array[0]), math.nan, 0, 1)
    return SeedEstimate(float(array.mean()), float(array.std(ddof=1) / math.sqrt(k)), k - 1, k)


def jackknife(
    statistic: Callable[[Mapping[str, list[Hashable]]], float],
    arms: Mapping[str, Sequence[Hashable]],
) -> SeedEstimate:
    """Delete-one-run jackknife of ``statistic(arms)`` (see the module docstring).

    ``arms`` maps an arm name to its runs (seeds); ``statistic`` receives the same mapping
    with lists and must accept any one run removed. Leaving-out values that are NaN
    (the statistic undefined without that run) make the spread undefined.
    """
    full = {arm: list(runs) for arm, runs in arms.items()}
    value = float(statistic(full))
    smallest = min((len(runs) for runs in full.values()), default=0)
    left_out = []
    for arm, runs in full.items():
        for index in range(len(runs)):
            kept = dict(full)
            kept[arm] = runs[:index] + runs[index + 1 :]
            left_out.append(float(statistic(kept)))
    m = len(left_out)
    thetas = np.asarray(left_out)
    if m < 2 or smallest < 2 or not np.all(np.isfinite(thetas)):
        return SeedEstimate(value, math.nan, 0, smallest)
    se = math.sqrt((m - 1) / m * float(np.sum((thetas - thetas.mean()) ** 2)))
    return SeedEstimate(value, se, smallest - 1, smallest)


Run = tuple[str, Hashable]  # (arm, seed); the source model P is the arm "P"


def pair_estimate(values: Mapping[tuple[Run, Run], float], fixed: str = "P") -> SeedEstimate:
    """Mean over seed pairs of a pair statistic and its delete-one-run jackknife.

    ``values`` maps ``((arm, seed), (arm, seed))`` to the statistic of that pair, e.g.
    ``{(("PT", 0), ("PT", 1)): 0.75, ...}``. Runs of arm ``fixed`` (the source model)
    are never left out.
    """
    items = [(a, b, float(v)) for (a, b), v in values.items() if np.isfinite(v)]
    arms: dict[str, list[Hashable]] = {}
    for a, b, _ in items:
        for arm, seed in (a, b):
            if arm != fixed and seed not in arms.setdefault(arm, []):
                arms[arm].append(seed)

    def mean_over(kept: Mapping[str, list[Hashable]]) -> float:
        chosen = [
            v for a, b, v in items if all(arm == fixed or seed in kept[arm] for arm, seed in (a, b))
        ]
        return float(np.mean(chosen)) if chosen else math.nan

    if not items:
        return SeedEstimate(math.nan, math.nan, 0, 0)
    return jackknife(mean_over, arms)


def difference(a: SeedEstimate, b: SeedEstimate) -> SeedEstimate:
    """``a - b`` for estimates from disjoint runs: ``se^2 = se_a^2 + se_b^2`` and the
    Welch-Satterthwaite ``df = se^4 / (se_a^4 / df_a + se_b^4 / df_b)``."""
    value = a.value - b.value
    arms = min(a.arms, b.arms)
    if not (a.has_spread and b.has_spread):
        return SeedEstimate(value, math.nan, 0, arms)
    variance = a.se**2 + b.se**2
    if variance == 0.0:
        return SeedEstimate(value, 0.0, min(a.df, b.df), arms)
    df = variance**2 / (a.se**4 / a.df + b.se**4 / b.df)
    # Welch-Satterthwaite df lies in [min(df_a, df_b), df_a + df_b]; clamped so that
    # rounding cannot push it out (one arm without spread: exactly the other's df, not
    # 0.9999999999999998, which would read as "no spread").
    df = min(max(df, min(a.df, b.df)), a.df + b.df)
    return SeedEstimate(value, math.sqrt(variance), df, arms)


def decide(effect: SeedEstimate, confidence: float = CONFIDENCE) -> str:
    """``reproduced`` if the interval of ``effect`` (positive = the paper's direction)
    lies above 0, ``contradicted`` if below, else ``inconclusive``."""
    low, high = effect.interval(confidence)
    if np.isfinite(low) and low > 0:
        return REPRODUCED
    if np.isfinite(high) and high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


def seeds_to_decide(effect: SeedEstimate, confidence: float = CONFIDENCE) -> int | None:
    """About how many seeds per arm would make the interval exclude 0, if the per-seed
    spread and the effect stay as observed: the smallest ``n`` with
    ``t_{(1 + c) / 2, df + n - k} * se * sqrt(k / n) < |value|`` (``k`` = seeds per arm
    now). None when there is no spread to extrapolate from or ``n`` > :data:`MAX_SEEDS`;
    ``k`` itself when the effect is already decided."""
    k = effect.arms
    if not effect.has_spread or k < 1 or not np.isfinite(effect.value):
        return None
    size = abs(effect.value)
    for n in range(k, MAX_SEEDS + 1):
        df = effect.df + (n - k)
        half = float(stats.t.ppf((1.0 + confidence) / 2.0, df)) * effect.se * math.sqrt(k / n)
        if half < size:
            return n
    return None


def _arms(pair: str) -> tuple[str, str]:
    first, _, second = pair.partition("-")
    return first, second


def pair_values(rows: pd.DataFrame, value: str) -> dict[tuple[Run, Run], float]:
    """``{((arm, seed), (arm, seed)): value}`` from rows of one pair kind with columns
    ``pair`` (e.g. ``PT-RIT``), ``first_seed``, ``second_seed`` (empty for P) and
    ``value``."""
    out: dict[tuple[Run, Run], float] = {}
    for pair, first, second, number in zip(
        rows["pair"], rows["first_seed"], rows["second_seed"], rows[value]
    ):
        arm_a, arm_b = _arms(str(pair))
        seed_a = None if pd.isna(first) else int(first)
        seed_b = None if pd.isna(second) else int(second)
        out[((arm_a, seed_a), (arm_b, seed_b))] = float(number)
    return out


def pair_summary(
    pairs: pd.DataFrame, value: str, by: Sequence[str], confidence: float = CONFIDENCE
) -> pd.DataFrame:
    """Per group of ``by`` (which includes ``pair``) of a per-seed-pair table: ``value``
    (the mean over seed pairs), ``<value>_seeds_low`` / ``<value>_seeds_high`` (the
    t-interval of :func:`pair_estimate`, NaN without a spread) and ``n_pairs``."""
    rows = []
    for key, group in pairs.groupby(list(by), sort=False, dropna=False):
        estimate = pair_estimate(pair_values(group, value))
        low, high = estimate.interval(confidence)
        keys = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(by, keys)),
                value: estimate.value,
                f"{value}_seeds_low": low,
                f"{value}_seeds_high": high,
                "n_pairs": len(group),
            }
        )
    return pd.DataFrame(rows)
