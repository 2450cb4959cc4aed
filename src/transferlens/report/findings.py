"""The paper's findings, decided from this study's numbers by stated tests across seeds.

Each finding is a claim of the paper in full, split into parts that are each tested
over the study's seeds (:mod:`transferlens.report.findings_core` states the rule:
reproduced / contradicted / inconclusive; "not run" when its tables are absent).
Nothing is hard-coded: the numbers come from ``results/*.csv``. "Closest target" is the
first of :func:`transferlens.report.tables.target_order` (the study spec's
``targets`` order or ``closeness`` rank), never a domain name.

Relative gap = 100 (A_PT - A_RIT) / A_PT (percent of the P-T metric).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

from transferlens.analysis.seed_stats import CONTRADICTED, INCONCLUSIVE, REPRODUCED
from transferlens.errors import UserInputError
from transferlens.report.findings_core import (
    NOT_RUN,
    SATURATION_TOLERANCE,
    Finding,
    FindingContext,
)
from transferlens.report.findings_criticality import (
    lower_modules,
    lower_more_critical,
    rewind_costs_rit_more,
)
from transferlens.report.findings_models import (
    barrier_higher,
    barrier_survives_alignment,
    cka_higher,
    distance_closer,
    mistakes_similar,
)
from transferlens.report.findings_training import (
    gap_largest_on_closest,
    gap_shrinks,
    pretrain_saturates,
    pt_beats_rit,
    speed_edge_at_smallest_block,
)
from transferlens.report.tables import StudyResults, load_results, ordered_targets, target_tasks

__all__ = [
    "SATURATION_TOLERANCE",
    "Finding",
    "compute_findings",
    "findings_frame",
    "findings_from_results",
    "findings_table",
    "lower_modules",
]

# In the order of the paper's sections.
_FINDINGS = (
    pt_beats_rit,
    gap_largest_on_closest,
    gap_shrinks,
    speed_edge_at_smallest_block,
    mistakes_similar,
    cka_higher,
    distance_closer,
    barrier_higher,
    barrier_survives_alignment,
    rewind_costs_rit_more,
    lower_more_critical,
    pretrain_saturates,
)


def findings_from_results(results: StudyResults) -> list[Finding]:
    """Decide every finding from already loaded tables (see :func:`compute_findings`)."""
    targets = ordered_targets(results)
    ctx = FindingContext(results=results, targets=targets, tasks=target_tasks(results, targets))
    return [decide(ctx) for decide in _FINDINGS]


def compute_findings(results_dir: str | Path) -> list[Finding]:
    """Decide the paper's findings from ``<study>/results/*.csv`` (a study folder also works).

    ``results/study.json`` orders the targets (closest to the source first).
    Raises UserInputError when the folder does not exist or a table is malformed.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        raise UserInputError(f"{folder}: results folder not found")
    study_dir = folder if (folder / "results").is_dir() else folder.parent
    return findings_from_results(load_results(study_dir))


def findings_table(findings: list[Finding], width: int = 100) -> str:
    """A plain-text table (finding, verdict, evidence) wrapped to ``width`` columns."""
    statement_width, verdict_width = 34, 12
    evidence_width = max(20, width - statement_width - verdict_width - 4)
    lines = [
        f"{'finding':<{statement_width}}  {'verdict':<{verdict_width}}  evidence",
        "-" * width,
    ]
    for finding in findings:
        left = textwrap.wrap(finding.statement, statement_width) or [""]
        right = textwrap.wrap(finding.evidence, evidence_width) or [""]
        for row in range(max(len(left), len(right))):
            statement = left[row] if row < len(left) else ""
            verdict = finding.verdict if row == 0 else ""
            evidence = right[row] if row < len(right) else ""
            lines.append(
                f"{statement:<{statement_width}}  {verdict:<{verdict_width}}  {evidence}".rstrip()
            )
    lines.append("-" * width)
    lines.append(findings_summary(findings))
    return "\n".join(lines)


def findings_summary(findings: list[Finding]) -> str:
    """``4 reproduced, 1 contradicted, 5 inconclusive, 1 not run (of 11 findings)``."""
    counts = {
        verdict: sum(finding.verdict == verdict for finding in findings)
        for verdict in (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN)
    }
    shown = ", ".join(f"{count} {verdict}" for verdict, count in counts.items())
    return f"{shown} (of {len(findings)} findings; rule: docs/findings.md)"


FINDINGS_COLUMNS = (
    "finding", "statement", "verdict", "part", "part_verdict", "statistic", "unit", "runs",
    "effect", "low", "high", "se", "df", "seeds_to_decide", "rule",
)  # fmt: skip


def findings_frame(findings: list[Finding]) -> pd.DataFrame:
    """``results/findings.csv``: one row per part of every finding (one row for a finding
    without parts) with the effect, its 95% t-interval, standard error and degrees of
    freedom, the unit of replication and, for an undecided part, about how many seeds
    per arm would decide it."""
    rows = []
    for finding in findings:
        head = {
            "finding": finding.key,
            "statement": finding.statement,
            "verdict": finding.verdict,
            "rule": finding.rule,
        }
        if not finding.parts:
            rows.append({**head, "part": "", "part_verdict": finding.verdict})
            continue
        for part in finding.parts:
            effect = part.effect
            low, high = part.interval()
            rows.append(
                {
                    **head,
                    "part": part.name,
                    "part_verdict": part.verdict,
                    "statistic": part.statistic,
                    "unit": part.unit,
                    "runs": part.runs or part.missing,
                    "effect": None if effect is None else effect.value,
                    "low": low,
                    "high": high,
                    "se": None if effect is None else effect.se,
                    "df": None if effect is None else effect.df,
                    "seeds_to_decide": part.seeds_needed,
                }
            )
    return pd.DataFrame(rows, columns=list(FINDINGS_COLUMNS))
