"""Statistics of a nested design: training seeds (level 1), direction seeds / data subsets within each (level 2).

Pure numpy/scipy functions on ``groups``: one 1-D array per training seed holding that model's
surface-level values (one per direction seed and data subset; a model-level metric such as the
trace has one value per group). The estimate of a variant is the mean of its seed means (every
trained model weighs the same).

* :func:`hierarchical_bootstrap`: resample training seeds with replacement, then values within each
  drawn seed (Saravanan, Berman & Sober 2020, "Application of the hierarchical bootstrap to
  multi-level data in neuroscience"); :func:`percentile_interval` turns replicates into an interval.
* :func:`variance_components`: one-way random-effects ANOVA (method of moments, unbalanced ``n0``;
  Searle, Casella & McCulloch 1992, ch. 3): the share of variance between trained models vs. within.
* :func:`permutation_test`: exact (or Monte Carlo) two-sided test on training-seed means, the
  independent units of the design (direction seeds of one model are not independent replicates).
* :func:`welch_test`: Welch's t-test on the same training-seed means (the parametric alternative).
* :func:`holm`: Holm's (1979) step-down adjustment; :func:`rank_summary`: rank probabilities and
  rank intervals from bootstrap replicates; :func:`verdict`: "holds" / "reversed" / "not resolved".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

HOLDS, REVERSED, UNRESOLVED = "holds", "reversed", "not resolved at this sample size"
Groups = Sequence[Sequence[float] | np.ndarray]


def clean(groups: Groups) -> list[np.ndarray]:
    """Float arrays without NaN/None; empty groups dropped."""
    out = []
    for g in groups:
        a = np.asarray([np.nan if v is None else v for v in g], dtype=float)
        a = a[np.isfinite(a)]
        if a.size:
            out.append(a)
    return out


def seed_means(groups: Groups) -> np.ndarray:
    """The mean of each training seed's values."""
    return np.asarray([g.mean() for g in clean(groups)])


def grand_mean(groups: Groups) -> float:
    """The mean of the seed means (nan without data)."""
    m = seed_means(groups)
    return float(m.mean()) if m.size else math.nan


def hierarchical_bootstrap(groups: Groups, n_boot: int = 2000, rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """``n_boot`` replicates of the grand mean: draw training seeds with replacement, then, for every drawn
    seed, its values with replacement (each draw of a seed resampled on its own)."""
    gs = clean(groups)
    rng = np.random.default_rng(rng)
    if not gs:
        return np.full(n_boot, np.nan)
    s = len(gs)
    picks = rng.integers(0, s, size=(n_boot, s))  # which seed fills each slot
    total = np.zeros(n_boot)
    for slot in range(s):
        slot_means = np.empty(n_boot)
        for k, g in enumerate(gs):
            rows = picks[:, slot] == k
            n = int(rows.sum())
            if n:
                slot_means[rows] = g[rng.integers(0, g.size, size=(n, g.size))].mean(axis=1)
        total += slot_means
    return total / s


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap replicates."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if not r.size:
        return math.nan, math.nan
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return float(lo), float(hi)


def variance_components(groups: Groups) -> dict[str, float]:
    """Between-seed and within-seed variance by one-way random-effects ANOVA and their shares.

    ``between = max(0, (MSB - MSW) / n0)``, ``within = MSW`` with ``n0 = (N - sum n_i^2 / N) / (k - 1)``.
    Shares are nan when there are fewer than two seeds or no variance at all.
    """
    gs = clean(groups)
    k = len(gs)
    n = np.asarray([g.size for g in gs], dtype=float)
    big_n = float(n.sum())
    nan = {"between": math.nan, "within": math.nan, "share_train": math.nan, "share_direction": math.nan}
    if k < 2:
        return nan
    allv = np.concatenate(gs)
    m = allv.mean()
    means = np.asarray([g.mean() for g in gs])
    ssb = float((n * (means - m) ** 2).sum())
    ssw = float(sum(((g - g.mean()) ** 2).sum() for g in gs))
    msb = ssb / (k - 1)
    msw = ssw / (big_n - k) if big_n > k else 0.0
    n0 = (big_n - float((n ** 2).sum()) / big_n) / (k - 1)
    between = max(0.0, (msb - msw) / n0)
    total = between + msw
    share = between / total if total > 0 else math.nan
    return {"between": between, "within": msw, "share_train": share,
            "share_direction": 1.0 - share if total > 0 else math.nan}


@dataclass(frozen=True)
class PermutationResult:
    diff: float  # mean(a) - mean(b) of the seed means
    p: float  # two-sided
    exact: bool  # every relabelling enumerated (else Monte Carlo, p = (1 + hits) / (1 + permutations))
    permutations: int
    min_p: float  # the smallest p this design can give (exact tests with few seeds cannot reach small p)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def permutation_test(a: Sequence[float], b: Sequence[float], *, permutations: int = 20000,
                     rng: np.random.Generator | int | None = 0) -> PermutationResult:
    """Two-sided permutation test of equal means of two sets of training-seed means.

    Every split of the pooled values into groups of the original sizes is enumerated when there are at
    most ``permutations`` of them; otherwise ``permutations`` random relabellings are drawn
    (Phipson & Smyth 2010: ``p = (1 + hits) / (1 + permutations)``).
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 1 or b.size < 1:
        return PermutationResult(math.nan, math.nan, True, 0, math.nan)
    pooled = np.concatenate([a, b])
    na, n = a.size, pooled.size
    observed = a.mean() - b.mean()
    tol = 1e-12 * max(1.0, float(np.abs(pooled).max()))
    total = math.comb(n, na)
    if total <= permutations:
        stats = np.empty(total)
        for i, idx in enumerate(itertools.combinations(range(n), na)):
            mask = np.zeros(n, bool)
            mask[list(idx)] = True
            stats[i] = pooled[mask].mean() - pooled[~mask].mean()
        hits = np.abs(stats) >= abs(observed) - tol
        top = np.abs(stats) >= np.abs(stats).max() - tol
        return PermutationResult(float(observed), float(hits.mean()), True, total, float(top.mean()))
    rng = np.random.default_rng(rng)
    stats = np.empty(permutations)
    for i in range(permutations):
        perm = rng.permutation(n)
        stats[i] = pooled[perm[:na]].mean() - pooled[perm[na:]].mean()
    hits = int((np.abs(stats) >= abs(observed) - tol).sum())
    return PermutationResult(float(observed), (1 + hits) / (1 + permutations), False, permutations,
                             max(2.0 / total, 1.0 / (1 + permutations)))


def welch_test(a: Sequence[float], b: Sequence[float]) -> PermutationResult:
    """Welch's t-test on two sets of training-seed means (assumes roughly normal seed means; unlike the
    permutation test it can reach small p with 3 seeds, at the price of that assumption)."""
    from scipy.stats import ttest_ind

    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        return PermutationResult(math.nan, math.nan, False, 0, math.nan)
    diff = float(a.mean() - b.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread: t undefined; equal means are not different
        return PermutationResult(diff, 1.0 if diff == 0 else math.nan, False, 0, 0.0)
    return PermutationResult(diff, float(ttest_ind(a, b, equal_var=False).pvalue), False, 0, 0.0)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given; nan stays nan and is not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def rank_summary(replicates: Mapping[str, np.ndarray], *, lower_first: bool = True,
                 confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """Per variant: the probability of ranking first and a rank interval, from aligned bootstrap replicates
    (replicate ``i`` of every variant forms one ranking; rank 1 is the lowest value when ``lower_first``)."""
    keys = list(replicates)
    mat = np.vstack([np.asarray(replicates[k], dtype=float) for k in keys])  # variants x replicates
    keep = np.all(np.isfinite(mat), axis=0)
    mat = mat[:, keep]
    if not mat.size:
        return {k: {"p_first": math.nan, "rank_lo": math.nan, "rank_hi": math.nan, "rank_median": math.nan}
                for k in keys}
    ranks = (mat if lower_first else -mat).argsort(axis=0).argsort(axis=0) + 1
    a = (1.0 - confidence) / 2.0
    return {k: {"p_first": float((ranks[i] == 1).mean()), "rank_lo": float(np.quantile(ranks[i], a)),
                "rank_hi": float(np.quantile(ranks[i], 1.0 - a)), "rank_median": float(np.median(ranks[i]))}
            for i, k in enumerate(keys)}


def verdict(diff: float, p_adjusted: float, alpha: float = 0.05, *, lower_is_smoother: bool = True) -> str:
    """The verdict on "A is smoother than B" from ``diff = value(A) - value(B)`` and its adjusted p-value."""
    if not (math.isfinite(diff) and math.isfinite(p_adjusted)) or p_adjusted >= alpha:
        return UNRESOLVED
    agrees = diff < 0 if lower_is_smoother else diff > 0
    return HOLDS if agrees else REVERSED
