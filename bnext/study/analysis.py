"""From a study's rows to its numbers: intervals per variant and metric, pairwise tests, ranks and verdicts.

:func:`analyze` returns a JSON-ready dict (``study.json``) that :mod:`bnext.study.report` turns into
tables, the forest plot and the verdict lines. Surface metrics are nested (training seed > direction
seed x data subset); model metrics (accuracy, curvature) have one value per training seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import stats
from .config import LOWER_IS_SMOOTHER, METRIC_LABELS, MODEL_METRICS, Claim


def groups_of(rows: Sequence[Mapping[str, Any]], variant: str, metric: str) -> list[np.ndarray]:
    """One array per training seed of ``variant``: its surfaces' values (a model metric: one value)."""
    by_seed: dict[int, list[float]] = {}
    for r in rows:
        if r["variant"] != variant:
            continue
        v = r.get(metric)
        by_seed.setdefault(int(r["train_seed"]), []).append(math.nan if v is None else float(v))
    out = []
    for seed in sorted(by_seed):
        vals = by_seed[seed]
        out.append(np.asarray(vals[:1] if metric in MODEL_METRICS else vals))
    return stats.clean(out)


def analyze(rows: Sequence[Mapping[str, Any]], variants: Sequence[str], metrics: Sequence[str], *,
            claims: Sequence[Claim] = (), reference: str | None = None, bootstrap: int = 2000,
            confidence: float = 0.95, alpha: float = 0.05, permutations: int = 20000,
            seed: int = 0, test: str = "permutation") -> dict[str, Any]:
    """Every variant x metric summary, every pair's permutation test (Holm over the pairs of a metric),
    the reference comparisons (Holm over the other variants), ranks, and one verdict per claim (Holm
    over the claims). ``test``: ``"permutation"`` (exact/Monte Carlo, distribution-free) or ``"welch"``
    (Welch's t-test), both on training-seed means."""
    if test not in ("permutation", "welch"):
        raise ValueError(f"test must be 'permutation' or 'welch', got {test!r}")
    rng = np.random.default_rng(seed)
    summary: dict[str, dict[str, Any]] = {}
    replicates: dict[str, dict[str, np.ndarray]] = {}
    for metric in metrics:
        summary[metric], replicates[metric] = {}, {}
        for v in variants:
            g = groups_of(rows, v, metric)
            reps = stats.hierarchical_bootstrap(g, bootstrap, rng)
            lo, hi = stats.percentile_interval(reps, confidence)
            vc = stats.variance_components(g) if metric not in MODEL_METRICS else {"share_train": math.nan}
            summary[metric][v] = {"mean": stats.grand_mean(g), "ci_low": lo, "ci_high": hi,
                                  "n_train": len(g), "n_per_train": int(np.median([x.size for x in g])) if g else 0,
                                  "share_train": vc["share_train"],
                                  "seed_means": [float(x) for x in stats.seed_means(g)]}
            replicates[metric][v] = reps

    def compare(metric: str, a: str, b: str) -> dict[str, Any]:
        xa, xb = summary[metric][a]["seed_means"], summary[metric][b]["seed_means"]
        res = (stats.welch_test(xa, xb) if test == "welch"
               else stats.permutation_test(xa, xb, permutations=permutations, rng=rng))
        d = replicates[metric][a] - replicates[metric][b]
        lo, hi = stats.percentile_interval(d, confidence)
        return {"metric": metric, "a": a, "b": b, **res.as_dict(), "diff_ci_low": lo, "diff_ci_high": hi}

    pairwise: list[dict[str, Any]] = []
    versus: dict[str, dict[str, dict[str, Any]]] = {}
    for metric in metrics:
        block = [compare(metric, a, b) for i, a in enumerate(variants) for b in variants[i + 1:]]
        for t, padj in zip(block, stats.holm([t["p"] for t in block])):
            t["p_holm"] = float(padj)
        pairwise.extend(block)
        if reference is not None and reference in variants:
            ref_block = [compare(metric, v, reference) for v in variants if v != reference]
            for t, padj in zip(ref_block, stats.holm([t["p"] for t in ref_block])):
                t["p_holm"] = float(padj)
            versus[metric] = {t["a"]: t for t in ref_block}
    ranks = {m: stats.rank_summary(replicates[m], lower_first=LOWER_IS_SMOOTHER.get(m, True),
                                   confidence=confidence) for m in metrics}
    verdicts = []
    # a partial study (or a variant subset) tests the claims whose two variants it has
    used = [c for c in claims if c.metric in metrics and c.smoother in variants and c.than in variants]
    claim_tests = [compare(c.metric, c.smoother, c.than) for c in used]
    for c, t, padj in zip(used, claim_tests, stats.holm([t["p"] for t in claim_tests])):
        lower = LOWER_IS_SMOOTHER.get(c.metric, True)
        d = replicates[c.metric][c.smoother] - replicates[c.metric][c.than]
        d = d[np.isfinite(d)]
        p_dir = float(((d < 0) if lower else (d > 0)).mean()) if d.size else math.nan
        verdicts.append({"smoother": c.smoother, "than": c.than, "metric": c.metric, "text": c.text,
                         "diff": t["diff"], "diff_ci_low": t["diff_ci_low"], "diff_ci_high": t["diff_ci_high"],
                         "p": t["p"], "p_holm": float(padj), "min_p": t["min_p"], "p_direction": p_dir, "test": test,
                         "verdict": stats.verdict(t["diff"], float(padj), alpha, lower_is_smoother=lower)})
    return {"variants": list(variants), "metrics": list(metrics),
            "labels": {m: METRIC_LABELS.get(m, m) for m in metrics},
            "summary": summary, "pairwise": pairwise, "versus_reference": versus, "reference": reference,
            "ranks": ranks, "verdicts": verdicts,
            "settings": {"bootstrap": bootstrap, "confidence": confidence, "alpha": alpha,
                         "permutations": permutations, "seed": seed, "test": test}}


def verdict_line(v: Mapping[str, Any], labels: Mapping[str, str], alpha: float) -> str:
    """One sentence per claim, generated from its numbers."""
    a, b = labels.get(v["smoother"], v["smoother"]), labels.get(v["than"], v["than"])
    head = f"{a} smoother than {b} ({METRIC_LABELS.get(v['metric'], v['metric'])}): {v['verdict'].upper()}"
    nums = (f"difference {v['diff']:+.3g} [{v['diff_ci_low']:+.3g}, {v['diff_ci_high']:+.3g}], "
            f"{v.get('test', 'permutation')} p = {v['p']:.3g}, Holm p = {v['p_holm']:.3g}, "
            f"bootstrap P(claimed order) = {v['p_direction']:.2f}")
    if v["verdict"] == stats.UNRESOLVED and math.isfinite(v.get("min_p", math.nan)) and v["min_p"] >= alpha:
        nums += (f"; with these training seeds no permutation test can give p < {v['min_p']:.2g}: "
                 "more training seeds are needed to resolve it")
    return f"{head} — {nums}"
