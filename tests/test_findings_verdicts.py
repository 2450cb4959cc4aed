"""The findings' verdicts across seeds (docs/findings.md) on fabricated results folders:
every finding reproduced, contradicted and inconclusive by construction; the Bonferroni
rule for contradiction; claims "on every target"; the block-shuffle claim judged on both
halves; ``findings.csv``; the power estimate; study folders without per-pair tables."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from fixtures_findings import (
    BARRIER,
    CKA,
    EFFECT,
    FINALS,
    JITTER,
    KAPPA,
    L2_TO_P,
    LOG_CRITICALITY,
    REWIND_COST,
    TARGETS,
    VARIANTS,
    expected_pair_mean,
    make_findings_study,
)
from transferlens.analysis.seed_stats import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    SeedEstimate,
    seeds_to_decide,
)
from transferlens.report.findings import (
    compute_findings,
    findings_frame,
    findings_table,
)
from transferlens.report.findings_core import NOT_RUN, Finding, Part, decided
from transferlens.results import table_path

KEYS = (
    "pt_beats_rit", "gap_largest_on_closest", "gap_shrinks_with_shuffling",
    "pt_faster_at_smallest_block", "pt_mistakes_more_similar", "cka_pt_higher",
    "pt_closer_in_parameters", "barrier_rit_higher", "rit_barrier_survives_alignment",
    "rewind_lower_costs_rit_more", "rit_lower_more_critical", "pretrain_gains_saturate",
)  # fmt: skip
# docs/findings.md and results.py name these columns of results/findings.csv.
FINDINGS_CSV_COLUMNS = [
    "finding", "statement", "verdict", "part", "part_verdict", "statistic", "unit", "runs",
    "effect", "low", "high", "se", "df", "seeds_to_decide", "rule",
]  # fmt: skip
PAIR_FINDINGS = (
    "pt_mistakes_more_similar", "cka_pt_higher", "pt_closer_in_parameters",
    "barrier_rit_higher", "rit_barrier_survives_alignment",
)  # fmt: skip


def findings_of(tmp_path: Path, variant: str = "reproduced", **options) -> dict[str, Finding]:
    study = make_findings_study(tmp_path / f"study-{variant}", variant, **options)
    return {finding.key: finding for finding in compute_findings(study / "results")}


def part(finding: Finding, name: str) -> Part:
    return next(p for p in finding.parts if p.name == name)


# --- each finding in each variant ----------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_finding_in_each_variant(tmp_path: Path, variant: str) -> None:
    findings = findings_of(tmp_path, variant)
    assert tuple(findings) == KEYS
    assert {key: finding.verdict for key, finding in findings.items()} == dict.fromkeys(
        KEYS, variant
    )
    for key, finding in findings.items():
        verdicts = [p.verdict for p in finding.parts]
        if variant == CONTRADICTED and key == "pt_beats_rit":
            assert verdicts == [CONTRADICTED, REPRODUCED]  # RI-T wins on near only
        elif variant == CONTRADICTED and key == "gap_shrinks_with_shuffling":
            assert verdicts == [REPRODUCED, CONTRADICTED]  # the second half fails
        else:
            assert set(verdicts) == {variant}, key
        assert finding.rule and finding.sections


def test_every_target_is_a_part(tmp_path: Path) -> None:
    findings = findings_of(tmp_path)
    names = {key: [p.name for p in finding.parts] for key, finding in findings.items()}
    assert names["pt_beats_rit"] == list(TARGETS)
    assert names["gap_largest_on_closest"] == ["near vs far"]
    assert names["gap_shrinks_with_shuffling"] == ["near: gap shrinks", "near: P-T edge at block 1"]
    assert names["pt_faster_at_smallest_block"] == ["near block 1", "far block 1"]
    assert names["pt_mistakes_more_similar"] == [
        "near", "near kappa/kappa_max", "far", "far kappa/kappa_max"
    ]  # fmt: skip
    assert len(names["cka_pt_higher"]) == 8  # 2 targets x 4 layers
    assert names["pt_closer_in_parameters"] == [
        f"{t} {kinds}" for t in TARGETS for kinds in ("RIT-RIT vs PT-PT", "RIT-P vs PT-P")
    ]
    assert names["rit_barrier_survives_alignment"] == ["near weights", "far weights"]
    assert names["pretrain_gains_saturate"] == ["near: epoch 2 vs 4", "far: epoch 2 vs 4"]
    for key in ("barrier_rit_higher", "rewind_lower_costs_rit_more", "rit_lower_more_critical"):
        assert names[key] == list(TARGETS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_effects_are_the_constructed_differences(tmp_path: Path, variant: str) -> None:
    findings = findings_of(tmp_path, variant)
    effect = EFFECT[variant]

    def value(key: str, name: str) -> float:
        return part(findings[key], name).effect.value  # type: ignore[union-attr]

    pt, rit = FINALS[variant]["near"]
    assert value("pt_beats_rit", "near") == pytest.approx(pt - rit, abs=1e-12)
    gaps = {t: 100 * (a - b) / a for t, (a, b) in FINALS[variant].items()}
    assert value("gap_largest_on_closest", "near vs far") == pytest.approx(
        gaps["near"] - gaps["far"], abs=1e-9
    )
    assert value("pt_mistakes_more_similar", "far") == pytest.approx(effect * KAPPA[3], abs=1e-12)
    assert value("cka_pt_higher", "near layer3") == pytest.approx(effect * CKA[3], abs=1e-12)
    assert value("pt_closer_in_parameters", "far RIT-P vs PT-P") == pytest.approx(
        effect * L2_TO_P[3], abs=1e-9
    )
    assert value("barrier_rit_higher", "near") == pytest.approx(effect * BARRIER[3], abs=1e-12)
    assert value("rit_barrier_survives_alignment", "far weights") == pytest.approx(
        effect * BARRIER[3], abs=1e-12
    )
    assert value("rewind_lower_costs_rit_more", "near") == pytest.approx(
        effect * REWIND_COST[1], abs=1e-12
    )
    assert value("rit_lower_more_critical", "far") == pytest.approx(
        effect * LOG_CRITICALITY[1], abs=1e-9
    )


def test_pair_parts_use_the_jackknife_over_seed_pairs(tmp_path: Path) -> None:
    """kappa PT-PT - RIT-RIT: each kind's three pairs jitter j (off_a + off_b) with seed
    offsets -1, 0, 1, so leaving run i out leaves the pair without it: theta = j (1, 0, -1),
    se^2 = 2/3 * 2 j^2 per kind; Welch over two equal kinds: df = 4."""
    kappa = part(findings_of(tmp_path)["pt_mistakes_more_similar"], "near")
    j = JITTER["reproduced"] * KAPPA[3]
    per_kind = math.sqrt(2 / 3 * 2 * j**2)
    assert kappa.effect.se == pytest.approx(math.sqrt(2) * per_kind, rel=1e-9)  # type: ignore[union-attr]
    assert kappa.effect.df == pytest.approx(4.0, rel=1e-9)  # type: ignore[union-attr]
    assert kappa.unit == "seed pairs" and kappa.runs == "P-T 3, RI-T 3 seeds"
    low, high = kappa.interval()
    half = stats.t.ppf(0.975, 4) * math.sqrt(2) * per_kind
    assert (low, high) == pytest.approx((KAPPA[3] - half, KAPPA[3] + half), abs=1e-12)
    assert kappa.detail == (
        f"PT-PT {expected_pair_mean(KAPPA, 'reproduced', 'PT-PT'):.3g} vs "
        f"RIT-RIT {expected_pair_mean(KAPPA, 'reproduced', 'RIT-RIT'):.3g}"
    )


def test_evidence_names_the_numbers_of_every_target(tmp_path: Path) -> None:
    findings = findings_of(tmp_path)
    evidence = findings["pt_beats_rit"].evidence
    assert "near (P-T 80.0% vs RI-T 55.0%): +25.0 points [" in evidence
    assert "far (P-T 70.0% vs RI-T 65.0%): +5.0 points [" in evidence
    assert "(P-T 3, RI-T 3 seeds) -> reproduced" in evidence
    assert (
        "relative gaps (closest first): near 31.2%, far 7.1%"
        in findings["gap_largest_on_closest"].evidence
    )
    rewind = findings["rewind_lower_costs_rit_more"].evidence
    assert rewind.startswith("lower modules conv1, layer1.0; ")
    assert "near (RI-T loses 45.0 points vs P-T 25.0 points)" in rewind
    assert "8 parts: 8 reproduced" in findings["cka_pt_higher"].evidence  # > 6 parts: counted


# --- the rule -------------------------------------------------------------------------------------


def constructed(value: float, se: float) -> Part:
    return Part("p", "effect", SeedEstimate(value, se, 4, 3), "seeds", "3 seeds")


def test_contradiction_needs_the_bonferroni_interval() -> None:
    """-1 with se 0.32 and df 4: the 95% interval is below 0 (t = 2.78), the 97.5% one
    (Bonferroni over 2 parts, t = 3.50) is not."""
    below = constructed(-1.0, 0.32)
    assert below.effect.interval(0.95)[1] < 0 < below.effect.interval(0.975)[1]  # type: ignore[union-attr]
    alone = decided("k", "claim", "rule", [below], ())
    assert alone.verdict == CONTRADICTED and alone.parts[0].seeds_needed == 3
    paired = decided("k", "claim", "rule", [below, constructed(5.0, 0.1)], ())
    assert [p.verdict for p in paired.parts] == [INCONCLUSIVE, REPRODUCED]
    assert paired.verdict == INCONCLUSIVE
    clearly = decided("k", "claim", "rule", [constructed(-2.0, 0.32), constructed(5.0, 0.1)], ())
    assert clearly.verdict == CONTRADICTED


def test_reproduced_needs_every_part_at_95_percent() -> None:
    """An intersection-union test: each part at 95%, no correction, every part needed."""
    just = constructed(1.0, 0.32)  # 95% interval above 0, 97.5% not
    many = decided("k", "claim", "rule", [just] * 5, ())
    assert many.verdict == REPRODUCED
    one_open = decided("k", "claim", "rule", [just, constructed(0.1, 0.32)], ())
    assert [p.verdict for p in one_open.parts] == [REPRODUCED, INCONCLUSIVE]
    assert one_open.verdict == INCONCLUSIVE


def test_claim_on_every_target_needs_every_target(tmp_path: Path) -> None:
    findings = findings_of(tmp_path, block_targets=("near",))
    speed = findings["pt_faster_at_smallest_block"]
    assert speed.verdict == INCONCLUSIVE
    assert [p.verdict for p in speed.parts] == [REPRODUCED, INCONCLUSIVE]
    far = part(speed, "far")
    assert far.effect is None and far.missing == "no block-shuffled runs (block_shuffle.targets)"
    assert "far: no block-shuffled runs (block_shuffle.targets) -> inconclusive" in speed.evidence
    assert (
        speed.seeds_to_decide == "evidence missing: no block-shuffled runs (block_shuffle.targets)"
    )
    assert speed.evidence.endswith(f"To decide: {speed.seeds_to_decide}")
    assert findings["gap_shrinks_with_shuffling"].verdict == REPRODUCED  # near has the sweep
    row = findings_frame([speed]).set_index("part").loc["far"]
    assert row["part_verdict"] == INCONCLUSIVE and math.isnan(row["effect"])
    assert row["runs"] == "no block-shuffled runs (block_shuffle.targets)"


def test_block_shuffle_on_another_target_is_named(tmp_path: Path) -> None:
    findings = findings_of(tmp_path, block_targets=("far",))
    shrinks = findings["gap_shrinks_with_shuffling"]
    assert shrinks.evidence.startswith("(near has no block shuffling) far: relative gap ")
    assert [p.name for p in shrinks.parts] == ["far: gap shrinks", "far: P-T edge at block 1"]


def test_block_shuffle_contradicted_on_its_second_half(tmp_path: Path) -> None:
    """The demo's case: the gap reverses to -20% at block 1, so it "shrinks", but P-T
    loses there: the claim is contradicted on its second half, not reproduced."""
    shrinks = findings_of(tmp_path, CONTRADICTED)["gap_shrinks_with_shuffling"]
    assert shrinks.verdict == CONTRADICTED
    gap, edge = shrinks.parts
    assert (gap.verdict, edge.verdict) == (REPRODUCED, CONTRADICTED)
    assert edge.effect.value == pytest.approx(0.40 - 0.48, abs=1e-12)  # type: ignore[union-attr]
    assert "near: relative gap -3.3% unshuffled -> -20.0% at block size 1" in shrinks.evidence
    assert "P-T edge at block 1: -8.0 points [" in shrinks.evidence


def test_one_target_reversed_contradicts_the_finding(tmp_path: Path) -> None:
    study = make_findings_study(tmp_path / "study")
    path = table_path(study / "results", "barriers_pairs")
    pairs = pd.read_csv(path)
    mask = (pairs["target"] == "far") & (pairs["pair"] == "PT-PT") & (pairs["align"] == "none")
    pairs.loc[mask, "metric_barrier"] += 0.4  # far: P-T models 0.2 above RI-T
    pairs.to_csv(path, index=False)
    findings = {f.key: f for f in compute_findings(study)}  # a study folder works too
    barrier = findings["barrier_rit_higher"]
    assert [p.verdict for p in barrier.parts] == [REPRODUCED, CONTRADICTED]
    assert barrier.verdict == CONTRADICTED
    assert findings["rit_barrier_survives_alignment"].verdict == CONTRADICTED  # same PT-PT
    others = {
        key: f.verdict
        for key, f in findings.items()
        if not key.startswith(("barrier", "rit_barrier"))
    }
    assert set(others.values()) == {REPRODUCED}


def test_the_mean_over_seed_pairs_decides(tmp_path: Path) -> None:
    study = make_findings_study(tmp_path / "study")
    path = table_path(study / "results", "mistakes_pairs")
    pairs = pd.read_csv(path)
    mask = (pairs["target"] == "near") & (pairs["pair"] == "RIT-RIT")
    pairs.loc[mask & (pairs["first_seed"] == 0) & (pairs["second_seed"] == 1), "kappa"] = 0.95
    pairs.to_csv(path, index=False)
    finding = next(f for f in compute_findings(study) if f.key == "pt_mistakes_more_similar")
    expected = pairs.loc[mask, "kappa"].mean()
    assert part(finding, "near").detail.endswith(f"RIT-RIT {expected:.3g}")
    assert part(finding, "near").verdict == INCONCLUSIVE  # one outlying pair, a wide spread
    assert finding.verdict == INCONCLUSIVE


# --- seeds: the power estimate, too few seeds, old study folders -----------------------------------


def test_inconclusive_findings_say_how_many_seeds_would_decide(tmp_path: Path) -> None:
    findings = findings_of(tmp_path, INCONCLUSIVE)
    for key, finding in findings.items():
        counts = [p.seeds_needed for p in finding.parts]
        for p in finding.parts:
            assert p.seeds_needed == seeds_to_decide(p.effect), (key, p.name)
        if None in counts:
            assert finding.seeds_to_decide == "not decidable with a practical number of seeds"
        else:
            assert finding.seeds_to_decide == f"about {max(counts)} seeds per arm"
            assert max(counts) > 3  # more than the study has
        assert finding.evidence.endswith(f"To decide: {finding.seeds_to_decide}")
    kappa = findings["pt_mistakes_more_similar"].seeds_to_decide
    assert re.fullmatch(r"about \d+ seeds per arm", kappa)
    # The same spread with a smaller effect needs more seeds.
    first = findings["pt_mistakes_more_similar"].parts[0].effect
    assert first is not None
    smaller = SeedEstimate(0.8 * first.value, first.se, first.df, first.arms)
    needed = seeds_to_decide(smaller)
    assert needed is not None and needed > int(kappa.split()[1])


def test_decided_findings_have_no_power_estimate(tmp_path: Path) -> None:
    findings = findings_of(tmp_path)
    assert all(f.seeds_to_decide == "" for f in findings.values())
    assert all(p.seeds_needed == 3 for f in findings.values() for p in f.parts)
    assert not any("To decide" in f.evidence for f in findings.values())


def test_two_seeds_give_no_spread_across_pairs_of_an_arm(tmp_path: Path) -> None:
    """Two seeds per arm: one PT-PT and one RIT-RIT pair, no jackknife possible."""
    findings = findings_of(tmp_path, seeds=(0, 1))
    assert findings["pt_beats_rit"].verdict == REPRODUCED  # one value per seed: spread
    for key in PAIR_FINDINGS:
        finding = findings[key]
        assert finding.verdict == INCONCLUSIVE, key
        assert "[no spread across seeds]" in finding.evidence
        assert finding.seeds_to_decide == ">= 3 seeds per arm to measure the spread"
    distance = findings["pt_closer_in_parameters"]
    assert [p.verdict for p in distance.parts] == [INCONCLUSIVE, REPRODUCED] * 2  # PT-P has one
    assert part(distance, "near RIT-P vs PT-P").effect.df > 0  # type: ignore[union-attr]


def test_old_study_folder_without_pair_tables(tmp_path: Path) -> None:
    """A folder written before the per-seed-pair tables: the means decide nothing."""
    findings = findings_of(tmp_path, pair_tables=False)
    for key in PAIR_FINDINGS:
        finding = findings[key]
        assert finding.verdict == INCONCLUSIVE, key
        assert all(not p.effect.has_spread for p in finding.parts)  # type: ignore[union-attr]
        assert "[no spread across seeds]" in finding.evidence
        assert "seeds unknown (no per-pair table)" in finding.evidence
    kappa = part(findings["pt_mistakes_more_similar"], "near")
    assert kappa.effect.value == pytest.approx(KAPPA[3], abs=1e-12)  # type: ignore[union-attr]
    others = [key for key in KEYS if key not in PAIR_FINDINGS]
    assert {findings[key].verdict for key in others} == {REPRODUCED}


def test_findings_not_run_without_their_tables(tmp_path: Path) -> None:
    omit = ("mistakes", "mistakes_pairs", "cka", "cka_pairs", "distance", "distance_pairs",
            "barriers", "barriers_pairs", "rewinding", "criticality", "pretrain_checkpoints")  # fmt: skip
    findings = findings_of(tmp_path, omit=omit)
    verdicts = {key: f.verdict for key, f in findings.items()}
    assert {verdicts.pop(key) for key in KEYS[:4]} == {REPRODUCED}
    assert set(verdicts.values()) == {NOT_RUN}
    assert all(findings[key].reproduced is None for key in verdicts)
    assert findings["cka_pt_higher"].evidence == "cka.csv is missing"


# --- findings.csv and the table -------------------------------------------------------------------


def test_findings_csv_has_one_row_per_part(tmp_path: Path) -> None:
    findings = compute_findings(
        make_findings_study(tmp_path / "study", INCONCLUSIVE, omit=("pretrain_checkpoints",))
        / "results"
    )
    frame = findings_frame(findings)
    assert list(frame.columns) == FINDINGS_CSV_COLUMNS
    assert len(frame) == sum(max(len(f.parts), 1) for f in findings)
    rows = frame.groupby("finding", sort=False)
    assert list(rows.groups) == list(KEYS)
    for finding in findings:
        chosen = rows.get_group(finding.key)
        assert set(chosen["verdict"]) == {finding.verdict}
        if not finding.parts:  # not run: one row, no part
            assert finding.verdict == NOT_RUN and list(chosen["part"]) == [""]
            continue
        assert list(chosen["part"]) == [p.name for p in finding.parts]
        for (_, row), p in zip(chosen.iterrows(), finding.parts):
            assert row["part_verdict"] == p.verdict
            assert row["effect"] == pytest.approx(p.effect.value)  # type: ignore[union-attr]
            assert (row["low"], row["high"]) == pytest.approx(p.interval())
            assert row["low"] < row["effect"] < row["high"]
            assert row["se"] == pytest.approx(p.effect.se)  # type: ignore[union-attr]
            assert row["df"] == pytest.approx(p.effect.df)  # type: ignore[union-attr]
            assert row["unit"] in ("seeds", "seed pairs") and row["runs"] == p.runs
            expected = p.seeds_needed
            assert (pd.isna(row["seeds_to_decide"]) if expected is None
                    else row["seeds_to_decide"] == expected)  # fmt: skip
    pairs = frame[frame["finding"] == "cka_pt_higher"]
    assert set(pairs["unit"]) == {"seed pairs"} and len(pairs) == 8


def test_the_study_layer_writes_findings_csv(tmp_path: Path) -> None:
    from transferlens.study.analyses.run import write_findings

    study = make_findings_study(tmp_path / "study")
    write_findings(study)
    written = pd.read_csv(study / "results" / "findings.csv")
    assert list(written.columns) == FINDINGS_CSV_COLUMNS
    assert set(written["verdict"]) == {REPRODUCED}
    assert len(written) == sum(len(f.parts) for f in compute_findings(study))
    assert {f.key for f in compute_findings(study)} == set(KEYS)  # findings.csv is no input


def test_findings_table_summary_line(tmp_path: Path) -> None:
    table = findings_table(list(findings_of(tmp_path).values()))
    assert table.splitlines()[-1] == (
        "12 reproduced, 0 contradicted, 0 inconclusive, 0 not run "
        "(of 12 findings; rule: docs/findings.md)"
    )
    assert all(len(line) <= 100 for line in table.splitlines())
    mixed = findings_of(tmp_path, CONTRADICTED, omit=("pretrain_checkpoints",))
    mixed["pt_beats_rit"] = findings_of(tmp_path, INCONCLUSIVE)["pt_beats_rit"]
    table = findings_table(list(mixed.values()), width=80)
    assert table.splitlines()[-1] == (
        "0 reproduced, 10 contradicted, 1 inconclusive, 1 not run "
        "(of 12 findings; rule: docs/findings.md)"
    )
    assert all(len(line) <= 80 for line in table.splitlines()[:-1])
    verdict_column = table.splitlines()[0].index("verdict")
    firsts = [line[verdict_column:].split()[0] for line in table.splitlines()[2:-2]
              if line[verdict_column:].strip() and not line[:verdict_column].startswith(" " * 30)]  # fmt: skip
    assert {CONTRADICTED, INCONCLUSIVE, NOT_RUN.split()[0]} <= set(firsts)
