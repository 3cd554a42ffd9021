"""The study's statistics against hand-computed cases, and their failure modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnext.study import stats
from bnext.study.analysis import analyze
from bnext.study.config import Claim

# three training seeds, two direction seeds each: seed means 2, 5, 8
GROUPS = [[1.0, 3.0], [4.0, 6.0], [7.0, 9.0]]


def test_variance_components_match_the_anova_by_hand():
    # grand mean 5; SSB = 2 * (9 + 0 + 9) = 36, MSB = 18; SSW = 3 * 2 = 6, MSW = 6 / 3 = 2;
    # n0 = (6 - 12 / 6) / 2 = 2; between = (18 - 2) / 2 = 8; share = 8 / (8 + 2)
    vc = stats.variance_components(GROUPS)
    assert vc["between"] == pytest.approx(8.0)
    assert vc["within"] == pytest.approx(2.0)
    assert vc["share_train"] == pytest.approx(0.8)
    assert vc["share_direction"] == pytest.approx(0.2)
    assert stats.grand_mean(GROUPS) == pytest.approx(5.0)
    np.testing.assert_allclose(stats.seed_means(GROUPS), [2.0, 5.0, 8.0])
    assert math.isnan(stats.variance_components([[1.0, 2.0]])["share_train"])  # one seed: no between level


def test_hierarchical_bootstrap_of_one_seed_is_the_mean_of_two_draws():
    # one seed with values 1 and 3: a replicate is the mean of two draws -> 1, 2, 3 with 1/4, 1/2, 1/4
    reps = stats.hierarchical_bootstrap([[1.0, 3.0]], 20000, rng=1)
    freq = {v: float(np.mean(np.isclose(reps, v))) for v in (1.0, 2.0, 3.0)}
    assert freq[1.0] == pytest.approx(0.25, abs=0.015)
    assert freq[2.0] == pytest.approx(0.5, abs=0.015)
    assert freq[3.0] == pytest.approx(0.25, abs=0.015)


def test_hierarchical_bootstrap_resamples_the_seeds_first():
    # no spread within seeds: replicates are means of 3 seed means drawn from {2, 5, 8}, so the
    # interval is that of the seed level; its extremes (all three draws equal) are 2 and 8
    groups = [[2.0, 2.0], [5.0, 5.0], [8.0, 8.0]]
    reps = stats.hierarchical_bootstrap(groups, 20000, rng=2)
    assert reps.mean() == pytest.approx(5.0, abs=0.05)
    assert reps.var() == pytest.approx(6.0 / 3, rel=0.05)  # population variance of {2, 5, 8} is 6; mean of 3
    assert reps.min() == pytest.approx(2.0) and reps.max() == pytest.approx(8.0)
    lo, hi = stats.percentile_interval(reps, 0.95)
    assert 2.0 <= lo < 5.0 < hi <= 8.0


def test_exact_permutation_test_by_hand():
    # 3 vs 3 seeds, completely separated: of the C(6, 3) = 20 splits only the observed one and its
    # mirror reach |difference| = 3, so p = 2 / 20, which is also the smallest p this design gives
    r = stats.permutation_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert r.exact and r.permutations == 20
    assert r.diff == pytest.approx(-3.0)
    assert r.p == pytest.approx(0.1) and r.min_p == pytest.approx(0.1)
    same = stats.permutation_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.diff == 0.0 and same.p == pytest.approx(1.0)


def test_monte_carlo_permutation_test_when_enumeration_is_too_long():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 12), rng.normal(3, 1, 12)  # C(24, 12) > 2.7 million splits
    r = stats.permutation_test(a, b, permutations=2000, rng=1)
    assert not r.exact and r.permutations == 2000
    assert r.p == pytest.approx(1 / 2001)  # no relabelling beats a 3-sigma separation


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = stats.holm([0.02, math.nan, 0.5])  # nan is left out of the family
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.5)
    np.testing.assert_allclose(stats.holm([0.9, 0.8]), [1.0, 1.0])  # 2 * 0.8 capped at 1, then monotone


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_holm_is_monotone_and_never_below_the_raw_p(ps):
    adj = stats.holm(ps)
    assert np.all(adj >= np.asarray(ps) - 1e-15) and np.all(adj <= 1.0)
    order = np.argsort(ps, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-15)


def test_rank_summary_and_verdicts():
    reps = {"a": np.array([1.0, 1.0, 3.0, 1.0]), "b": np.array([2.0, 2.0, 2.0, 2.0])}
    r = stats.rank_summary(reps, lower_first=True)
    assert r["a"]["p_first"] == 0.75 and r["b"]["p_first"] == 0.25
    assert stats.rank_summary(reps, lower_first=False)["a"]["p_first"] == 0.25
    assert stats.verdict(-1.0, 0.01) == stats.HOLDS
    assert stats.verdict(+1.0, 0.01) == stats.REVERSED
    assert stats.verdict(-1.0, 0.2) == stats.UNRESOLVED
    assert stats.verdict(+1.0, 0.01, lower_is_smoother=False) == stats.HOLDS  # e.g. a wider basin
    assert stats.verdict(math.nan, 0.01) == stats.UNRESOLVED


def _rows(variant: str, seed_means: list[float], spread: float = 0.1, dirs: int = 3) -> list[dict]:
    rows = []
    for s, m in enumerate(seed_means):
        for d in range(dirs):
            rows.append({"variant": variant, "train_seed": s, "direction_seed": d,
                         "roughness": m + spread * (d - (dirs - 1) / 2), "top1": 90.0 + s})
    return rows


def test_analysis_verdicts_from_the_numbers():
    # 6 seeds each, fully separated: exact p = 2 / C(12, 6) = 0.00216 for each pair
    rows = _rows("rough", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]) + _rows("smooth", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    rows += _rows("same", [1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    claims = [Claim("smooth", "rough"), Claim("rough", "smooth"), Claim("same", "rough")]
    out = analyze(rows, ["rough", "smooth", "same"], ["roughness", "top1"], claims=claims, reference="rough",
                  bootstrap=500)
    v = {(c["smoother"], c["than"]): c for c in out["verdicts"]}
    assert v[("smooth", "rough")]["verdict"] == stats.HOLDS
    assert v[("rough", "smooth")]["verdict"] == stats.REVERSED
    assert v[("same", "rough")]["verdict"] == stats.UNRESOLVED and v[("same", "rough")]["p"] == pytest.approx(1.0)
    assert v[("smooth", "rough")]["p"] == pytest.approx(2 / math.comb(12, 6))
    assert v[("smooth", "rough")]["p_holm"] == pytest.approx(3 * 2 / math.comb(12, 6))
    s = out["summary"]["roughness"]["smooth"]
    assert s["mean"] == pytest.approx(0.35) and s["n_train"] == 6 and s["n_per_train"] == 3
    assert s["ci_low"] < 0.35 < s["ci_high"]
    assert out["summary"]["top1"]["rough"]["n_per_train"] == 1  # a model metric: one value per trained model
    assert out["ranks"]["roughness"]["smooth"]["p_first"] == 1.0


def test_welch_alternative_on_the_same_seed_means():
    r = stats.welch_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])  # t = -3 / sqrt(2/3), df = 4 -> p = 0.0213
    assert r.diff == pytest.approx(-3.0) and r.p == pytest.approx(0.02131, abs=2e-4)
    assert stats.welch_test([1.0, 1.0], [1.0, 1.0]).p == 1.0  # identical, no spread: not different
    rows = _rows("x", [1.0, 1.1, 1.2]) + _rows("y", [1.0, 1.1, 1.2])
    out = analyze(rows, ["x", "y"], ["roughness"], claims=[Claim("x", "y")], bootstrap=100, test="welch")
    assert out["verdicts"][0]["verdict"] == stats.UNRESOLVED and out["verdicts"][0]["p"] == pytest.approx(1.0)
