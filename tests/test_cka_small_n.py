"""Biased CKA is inflated at small n for independent features; debiased CKA is near 0.

The numbers are those of docs/cka.md (independent_features_cka with its defaults:
d = 64 on both sides, 10 seeded draws per n); the bounds below leave a margin around
what was measured there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from transferlens.analysis.cka_small_n import independent_features_cka

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cka.md"


@pytest.fixture(scope="module")
def table():
    return independent_features_cka().set_index("n")


def test_biased_cka_of_independent_features_is_inflated_at_small_n(table):
    # Measured: 0.676, 0.331, 0.059 -- about d / (n + d) = 0.667, 0.333, 0.059.
    for n, row in table.iterrows():
        assert row["biased_mean"] == pytest.approx(64 / (n + 64), abs=0.03)
    assert table.loc[32, "biased_mean"] > 0.6
    assert table.loc[32, "biased_mean"] > table.loc[128, "biased_mean"] > 0.25
    assert table.loc[1024, "biased_mean"] > 0.04


def test_debiased_and_minibatch_cka_of_independent_features_are_near_zero(table):
    # Measured |mean| 0.020 (sd 0.045), 0.002 (0.011), 0.000 (0.002) at n = 32, 128, 1024.
    bounds = {32: 0.05, 128: 0.01, 1024: 0.003}
    for n, bound in bounds.items():
        assert abs(table.loc[n, "debiased_mean"]) < bound
        assert abs(table.loc[n, "minibatch_mean"]) < bound
        assert table.loc[n, "biased_mean"] > 10 * bound
    # One batch of 256 holds every example up to n = 256: the debiased value exactly.
    assert table.loc[128, "minibatch_mean"] == pytest.approx(table.loc[128, "debiased_mean"])


def test_the_docs_show_the_numbers_this_function_returns(table):
    text = PAGE.read_text(encoding="utf-8")
    block = re.search(r"<!-- cka-small-n:.*?-->(.*?)<!-- /cka-small-n -->", text, re.S)
    assert block is not None, "docs/cka.md lost its cka-small-n table"
    shown = [line for line in block.group(1).splitlines() if re.match(r"\| \d", line)]
    expected = [
        f"| {n} | {r.biased_mean:.3f} ± {r.biased_sd:.3f} | {64 / (n + 64):.3f} | "
        f"{r.debiased_mean:.3f} ± {r.debiased_sd:.3f} | "
        f"{r.minibatch_mean:.3f} ± {r.minibatch_sd:.3f} |"
        for n, r in table.iterrows()
    ]
    assert shown == expected
