"""The paper's findings, decided from this study's numbers (yes / no / not run).

Each finding is a comparison computed from the results tables; nothing is
hard-coded: a finding that does not hold says "no" and shows the numbers that
contradict it, one whose tables are missing says "not run". Where a table has
several rows for the same comparison (several seeds or seed pairs), their mean is
used. "Closest target" is the first of :func:`transferlens.report.tables.target_order`
(the study spec's ``targets`` order or ``closeness`` rank), never a domain name.

Relative gap = 100 (A_PT - A_RIT) / A_PT (percent of the P-T metric).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from transferlens.errors import UserInputError
from transferlens.report.findings_core import SATURATION_TOLERANCE, Finding, FindingContext
from transferlens.report.findings_models import (
    barrier_higher,
    cka_higher,
    distance_closer,
    lower_modules,
    mistakes_similar,
    rewind_costs_rit_more,
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
    rewind_costs_rit_more,
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
    """A plain-text table (finding, reproduced, evidence) wrapped to ``width`` columns."""
    statement_width, verdict_width = 34, 10
    evidence_width = max(20, width - statement_width - verdict_width - 4)
    lines = [
        f"{'finding':<{statement_width}}  {'reproduced':<{verdict_width}}  evidence",
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
    held = sum(finding.reproduced is True for finding in findings)
    decided = sum(finding.reproduced is not None for finding in findings)
    lines.append("-" * width)
    lines.append(
        f"{held} of {decided} decided findings reproduced ({len(findings) - decided} not run)"
    )
    return "\n".join(lines)
