"""Landscape studies: which differences between models are real (issue 21, docs/studies.md).

A study repeats every landscape and curvature measurement over training seeds and, per trained model,
over random direction seeds (and data subsets), then reports each metric as a mean with a hierarchical
bootstrap interval, tests the claimed orderings with permutation tests over training seeds (Holm), and
writes one verdict per claim: "holds", "reversed" or "not resolved at this sample size".

* :mod:`bnext.study.config` — the YAML schema (``configs/studies/*.yaml``).
* :mod:`bnext.study.run` — points (variant x training seed) through the ablation runner (local, Slurm) or inline.
* :mod:`bnext.study.curvature` — top eigenvalue with residual, trace to a stated precision, sharpness.
* :mod:`bnext.study.stats` — pure statistics: hierarchical bootstrap, variance shares, permutation and
  Welch tests, Holm, ranks, verdicts; :mod:`bnext.study.analysis` applies them to a study's rows.
* :mod:`bnext.study.report` — table (Markdown, CSV, LaTeX), forest plot, median-roughness contours, verdicts.

``python -m bnext.study CONFIG`` runs and reports; :mod:`bnext.demo` uses the same analysis for its intervals.
"""
