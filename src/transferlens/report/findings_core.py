"""What a finding is, how its verdict is decided, and the context every decision reads.

A finding states one of the paper's claims in full and splits it into *parts*, one test
each (a target, a layer, a half of the claim). A part's effect is oriented so that a
positive value is what the paper says, and is estimated over the study's seeds
(:mod:`transferlens.analysis.seed_stats`): its 95% t-interval decides the part:

* **reproduced** — the interval lies above 0;
* **contradicted** — the interval at confidence ``1 - 0.05 / m`` (Bonferroni over the
  finding's ``m`` parts) lies below 0;
* **inconclusive** — otherwise, or when the runs cannot measure a spread across seeds.

The finding is *contradicted* when any part is, *reproduced* when every part is (an
intersection-union test: no correction needed), *inconclusive* otherwise, and *not run*
when its tables are absent. An inconclusive finding says about how many seeds per arm
would decide it (:func:`~transferlens.analysis.seed_stats.seeds_to_decide`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from transferlens.analysis.seed_stats import (
    CONFIDENCE,
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    SeedEstimate,
    seeds_to_decide,
)
from transferlens.report.formatting import format_metric, format_metric_difference, metric_scale
from transferlens.report.tables import StudyResults

# A pre-training checkpoint "saturates" the target once its final metric is within this
# much (a fraction: 1 accuracy point, or 0.01 of ROC-AUC) of the last checkpoint's.
SATURATION_TOLERANCE = 0.01
NOT_RUN = "not run"
SEED_UNIT, PAIR_UNIT = "seeds", "seed pairs"


@dataclass(frozen=True)
class Part:
    """One test of a finding: ``effect`` > 0 is what the paper says.

    ``statistic`` names the effect; ``unit`` is the unit of replication; ``runs`` says
    how many seeds each arm has; ``show`` formats an effect value for a reader;
    ``detail`` gives the compared numbers (``PT-PT 0.75 vs RIT-RIT 0.65``);
    ``missing`` says why there is no effect (then ``effect`` is None); ``needs`` is
    the fewest seeds per arm that can measure a spread (3 for pairs of one arm).
    """

    name: str
    statistic: str
    effect: SeedEstimate | None
    unit: str
    runs: str
    show: Callable[[float], str] = field(default=lambda value: f"{value:+.3g}", repr=False)
    detail: str = ""
    missing: str = ""
    needs: int = 2
    verdict: str = INCONCLUSIVE
    seeds_needed: int | None = None

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        if self.effect is None:
            return math.nan, math.nan
        return self.effect.interval(confidence)

    def describe(self) -> str:
        """``real (P-T 87.4% vs RI-T 78.1%): +9.3 points [+7.9, +10.7] (P-T 2, RI-T 2
        seeds) -> reproduced``."""
        name = f"{self.name} ({self.detail})" if self.detail else self.name
        if self.effect is None:
            return f"{name}: {self.missing} -> {self.verdict}"
        low, high = self.interval()
        spread = (
            f"[{self.show(low)}, {self.show(high)}]"
            if math.isfinite(low)
            else "[no spread across seeds]"
        )
        return f"{name}: {self.show(self.effect.value)} {spread} ({self.runs}) -> {self.verdict}"


def decide_part(part: Part, n_parts: int) -> Part:
    """The part with its verdict (module docstring) and, if inconclusive, its power
    estimate."""
    if part.effect is None or not math.isfinite(part.effect.value):
        return replace(part, verdict=INCONCLUSIVE)
    low, _ = part.effect.interval(CONFIDENCE)
    _, high = part.effect.interval(1.0 - (1.0 - CONFIDENCE) / max(n_parts, 1))
    if math.isfinite(low) and low > 0:
        return replace(part, verdict=REPRODUCED, seeds_needed=part.effect.arms)
    if math.isfinite(high) and high < 0:
        return replace(part, verdict=CONTRADICTED, seeds_needed=part.effect.arms)
    return replace(part, verdict=INCONCLUSIVE, seeds_needed=seeds_to_decide(part.effect))


def combine(parts: list[Part]) -> str:
    """Contradicted if any part is, reproduced if every part is, else inconclusive."""
    verdicts = [part.verdict for part in parts]
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if verdicts and all(verdict == REPRODUCED for verdict in verdicts):
        return REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Finding:
    """One finding of the paper and this study's verdict on it.

    ``verdict``: reproduced, contradicted, inconclusive or not run; ``rule`` states the
    test; ``parts`` the tests it combines; ``evidence`` the deciding numbers;
    ``sections`` the report sections (and so the figures) that show them.
    """

    key: str
    statement: str
    verdict: str
    evidence: str
    sections: tuple[str, ...] = ()
    rule: str = ""
    parts: tuple[Part, ...] = ()

    @property
    def reproduced(self) -> bool | None:
        """True when reproduced, False when contradicted or inconclusive, None when not
        run (kept for callers that ask yes/no)."""
        return None if self.verdict == NOT_RUN else self.verdict == REPRODUCED

    @property
    def seeds_to_decide(self) -> str:
        """For an inconclusive finding, about how many seeds per arm would decide its
        undecided parts ("" otherwise)."""
        if self.verdict != INCONCLUSIVE:
            return ""
        open_parts = [part for part in self.parts if part.verdict == INCONCLUSIVE]
        missing = [part.missing for part in open_parts if part.effect is None]
        if missing:
            return f"evidence missing: {missing[0]}"
        if any(part.effect.arms == 0 for part in open_parts):  # type: ignore[union-attr]
            return "rerun the analyses: this study folder has no per-seed-pair tables"
        if any(not part.effect.has_spread for part in open_parts):  # type: ignore[union-attr]
            needs = max(part.needs for part in open_parts)
            return f">= {needs} seeds per arm to measure the spread"
        counts = [part.seeds_needed for part in open_parts]
        if any(count is None for count in counts):
            return "not decidable with a practical number of seeds"
        return f"about {max(counts)} seeds per arm"  # type: ignore[type-var]


def decided(
    key: str, statement: str, rule: str, parts: list[Part], sections: tuple[str, ...]
) -> Finding:
    """The finding whose parts are tested and combined (module docstring)."""
    tested = [decide_part(part, len(parts)) for part in parts]
    verdict = combine(tested)
    evidence = _evidence(tested)
    finding = Finding(key, statement, verdict, evidence, sections, rule, tuple(tested))
    if verdict == INCONCLUSIVE and finding.seeds_to_decide:
        finding = replace(finding, evidence=f"{evidence}. To decide: {finding.seeds_to_decide}")
    return finding


# Findings with more parts than this list only the parts that are not reproduced (all
# parts are in findings.csv and the report's detail table).
LISTED_PARTS = 6


def _evidence(parts: list[Part]) -> str:
    if len(parts) <= LISTED_PARTS:
        return "; ".join(part.describe() for part in parts)
    counts = {
        verdict: sum(part.verdict == verdict for part in parts)
        for verdict in (REPRODUCED, CONTRADICTED, INCONCLUSIVE)
    }
    head = ", ".join(f"{count} {verdict}" for verdict, count in counts.items() if count)
    others = [part for part in parts if part.verdict != REPRODUCED]
    shown = "; ".join(part.describe() for part in others[:LISTED_PARTS])
    more = f"; and {len(others) - LISTED_PARTS} more" if len(others) > LISTED_PARTS else ""
    return f"{len(parts)} parts: {head}" + (f"; not reproduced: {shown}{more}" if others else "")


@dataclass
class FindingContext:
    """The tables, the targets (closest to the source first) and each target's task."""

    results: StudyResults
    targets: list[str]
    tasks: dict[str, str]

    def metric(self, target: str, value: float | None) -> str:
        return format_metric(value, self.tasks.get(target, "multiclass"))

    def points(self, target: str, value: float | None) -> str:
        return format_metric_difference(value, self.tasks.get(target, "multiclass"))

    def signed_points(self, target: str) -> Callable[[float], str]:
        """Formats a metric difference with its sign: ``+12.3 points`` / ``+0.012``."""
        task = self.tasks.get(target, "multiclass")
        scale = metric_scale(task)
        unit = "" if task == "multilabel" else " points"
        digits = 3 if task == "multilabel" else 1
        return lambda value: f"{scale * value:+.{digits}f}{unit}"


def relative_gap(pt: float, rit: float) -> float:
    """100 (A_PT - A_RIT) / A_PT, in percent of the P-T metric."""
    return 100.0 * (pt - rit) / pt


def not_run(key: str, statement: str, why: str, sections: tuple[str, ...]) -> Finding:
    """A finding whose analysis was not run (``why`` names the missing table or rows)."""
    return Finding(key, statement, NOT_RUN, why, sections)
