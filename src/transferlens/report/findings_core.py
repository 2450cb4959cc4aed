"""What a finding is, and the context every finding's decision reads.

A decision reads the loaded tables, the targets ordered closest to the source first
and each target's task (for formatting), and returns a :class:`Finding`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferlens.report.formatting import format_metric, format_metric_difference
from transferlens.report.tables import StudyResults
from transferlens.results import main_runs

# A pre-training checkpoint "saturates" the target once its final metric is within this
# much (a fraction: 1 accuracy point, or 0.01 of ROC-AUC) of the best checkpoint's.
SATURATION_TOLERANCE = 0.01


@dataclass(frozen=True)
class Finding:
    """One finding of the paper and whether this study reproduces it.

    ``reproduced``: True (holds), False (does not hold), None (its analysis was not
    run). ``evidence`` gives the deciding numbers; ``sections`` the report sections
    (and so the figures) that show them.
    """

    key: str
    statement: str
    reproduced: bool | None
    evidence: str
    sections: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "no", None: "not run"}[self.reproduced]


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


def relative_gap(pt: float, rit: float) -> float:
    """100 (A_PT - A_RIT) / A_PT, in percent of the P-T metric."""
    return 100.0 * (pt - rit) / pt


def headline(ctx: FindingContext) -> tuple[dict[str, tuple[float, float]], str]:
    """Mean final metric of P-T and RI-T per target (unshuffled), and the table used."""
    runs = ctx.results.get("runs")
    values: dict[str, tuple[float, float]] = {}
    if runs is not None:
        main = main_runs(runs).dropna(subset=["final_test_metric"])
        means = main.groupby(["target", "init"])["final_test_metric"].mean()
        for target in ctx.targets:
            if (target, "PT") in means.index and (target, "RIT") in means.index:
                values[target] = (float(means[(target, "PT")]), float(means[(target, "RIT")]))
        if values:
            return values, "runs.csv"
    reuse = ctx.results.get("reuse")
    if reuse is not None:
        unshuffled = reuse[reuse["block_size"].isna()].groupby("target")
        for target, group in unshuffled:
            values[str(target)] = (
                float(group["metric_pt"].mean()),
                float(group["metric_rit"].mean()),
            )
        values = {target: values[target] for target in ctx.targets if target in values}
    return values, "reuse.csv"


def not_run(key: str, statement: str, why: str, sections: tuple[str, ...]) -> Finding:
    """A finding whose analysis was not run (``why`` names the missing table or rows)."""
    return Finding(key, statement, None, why, sections)
