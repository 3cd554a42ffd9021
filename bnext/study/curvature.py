"""Curvature of one trained model with stated precision: Lanczos top eigenvalue with its residual, Hutchinson
trace run to a target relative standard error (or its cap, said so), and Keskar's epsilon-sharpness.

Intervals of the estimators themselves (:func:`estimator_interval`): the top eigenvalue lies within its
Ritz residual of a true eigenvalue (``|theta - lambda| <= r``, Parlett 1998, thm 11.4.1); the trace's
95% normal interval is ``estimate +- 1.96 stderr``. These are the error bars of one trained model;
across training seeds :mod:`bnext.study.stats` gives the study's intervals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any


def checkpoint_curvature(checkpoint: str | os.PathLike[str], settings: Mapping[str, Any], *, data: str = "digits",
                         data_root: str | None = None, seed: int = 0) -> dict[str, Any]:
    """``top_eig`` (+ residual), ``trace`` (+ stderr, probes, converged) and ``sharpness`` of a checkpoint on a
    seeded subset of ``settings["samples"]`` training images (keys: :data:`bnext.study.config.DEFAULT_CURVATURE`)."""
    from bnext.ablate.tasks import eval_tensors
    from bnext.models import load
    from landscape.curvature.hessian import Hessian
    from landscape.curvature.sharpness import epsilon_sharpness

    c = settings
    model = load(checkpoint).eval()
    x, y = eval_tensors(data, "train", input_size=model.spec["input_size"], data_root=data_root,
                        samples=int(c["samples"]), seed=0)
    t0 = time.perf_counter()
    h = Hessian(model, (x, y), batch_size=int(c["samples"]))
    out: dict[str, Any] = {"hessian_samples": h.n, "hessian_dim": h.dim}
    eig = h.top_eigenvalues(1, tol=float(c["lanczos_tol"]), max_iter=int(c["lanczos_iter"]), seed=seed)
    out.update(top_eig=eig.values[0], top_eig_residual=eig.residuals[0], top_eig_converged=eig.converged,
               top_eig_iterations=eig.iterations)
    if c.get("trace_cap"):
        tr = h.trace(int(c["trace_cap"]), seed=seed, target=c.get("trace_target"))
        out.update(trace=tr.estimate, trace_stderr=tr.stderr, trace_probes=tr.probes, trace_converged=tr.converged,
                   trace_target=tr.target)
    else:
        out.update(trace=None)
    if c.get("sharpness_epsilon"):
        sh = epsilon_sharpness(model, (x, y), epsilon=float(c["sharpness_epsilon"]),
                               steps=int(c["sharpness_steps"]), batch_size=int(c["samples"]), seed=seed)
        out.update(sharpness=sh.keskar)
    else:
        out.update(sharpness=None)
    out["hessian_seconds"] = round(time.perf_counter() - t0, 3)
    return out


def estimator_interval(row: Mapping[str, Any], metric: str, z: float = 1.96) -> tuple[float, float] | None:
    """The estimator's own interval of ``top_eig`` (Ritz residual) or ``trace`` (``z`` standard errors)."""
    if metric == "top_eig" and row.get("top_eig") is not None and row.get("top_eig_residual") is not None:
        return row["top_eig"] - row["top_eig_residual"], row["top_eig"] + row["top_eig_residual"]
    if metric == "trace" and row.get("trace") is not None and row.get("trace_stderr") is not None:
        return row["trace"] - z * row["trace_stderr"], row["trace"] + z * row["trace_stderr"]
    return None
