"""Running a study: one point per (variant, training seed), each training one model and taking its surfaces.

A point trains (or reuses) the model with its seed, computes one 2D surface per direction seed and
data subset (``surfaces/d<direction>_k<data>.h5``, resumable, the landscape store schema), its
curvature (``curvature.json``: Lanczos top eigenvalue with its residual, Hutchinson trace to a stated
relative error, Keskar's epsilon-sharpness) and writes ``result.json`` (the ablation schema: one row
per surface). Points are the ablation runner's grid points: ``executor="local"`` runs them with
:func:`bnext.ablate.runner.run_sweep` (one papermill process each, ``notebooks/study_point.ipynb``),
``"slurm"`` submits them as a job array (:func:`bnext.ablate.cluster.submit_sweep`), ``"inline"``
runs them in this process (tests, the demo). Finished points are skipped; an interrupted one resumes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import SURFACE_METRICS, StudyConfig, StudyConfigError
from .config import load as load_config

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "study_point.ipynb"
POINT_INDEX = ("variant", "train_seed", "direction_seed", "data_seed")
POINT_COLUMNS = (*SURFACE_METRICS, "top1", "top_eig", "trace", "sharpness")


def grid(cfg: StudyConfig) -> dict[str, Any]:
    """The ablation-runner grid of a study: every variant x training seed (the config file fixed)."""
    if cfg.path is None:
        raise StudyConfigError("a study run needs its config file (load it with bnext.study.config.load)")
    return {"config": str(Path(cfg.path).resolve()), "fingerprint": cfg.fingerprint(),
            "variant": [v.key for v in cfg.variants], "train_seed": list(cfg.train_seeds)}


def points_dir(cfg: StudyConfig) -> Path:
    return cfg.out_dir / "points"


def curvature(checkpoint: str | os.PathLike[str], cfg: StudyConfig, seed: int, out_dir: Path) -> dict[str, Any]:
    """Top eigenvalue (Lanczos, with residual), trace (Hutchinson to ``trace_target``) and epsilon-sharpness
    of one trained model on a seeded training subset; cached in ``out_dir/curvature.json``."""
    from bnext.ablate.results import atomic_write_json
    from landscape.store import file_sha256

    c = cfg.curvature
    path = out_dir / "curvature.json"
    key = {"checkpoint_sha256": file_sha256(checkpoint), "settings": c, "seed": seed}
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
        except ValueError:
            cached = {}
        if cached.get("key") == key:
            return cached["curvature"]
    from .curvature import checkpoint_curvature

    out = checkpoint_curvature(checkpoint, c, data=cfg.train.get("data", "digits"),
                               data_root=cfg.train.get("data_root"), seed=seed)
    atomic_write_json(path, {"key": key, "curvature": out})
    return out


def run_point(cfg: StudyConfig, variant: str, train_seed: int, out_dir: str | os.PathLike[str], *,
              threads: int | None = None, parameters: dict[str, Any] | None = None) -> Path:
    """Train one variant with one seed, take all its surfaces and its curvature; returns ``result.json``."""
    from bnext.ablate import tasks
    from bnext.ablate.results import write_result

    t0 = time.perf_counter()
    v = cfg.variant(variant)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_kw = {k: val for k, val in cfg.train.items()}
    train_kw["overrides"] = tuple(train_kw.get("overrides") or ())
    tc = tasks.train_config(v.model, out_dir=out_dir / "train", options=dict(v.options), seed=int(train_seed),
                            threads=threads, **train_kw)
    result = tasks.train(tc)
    ckpt = result["checkpoint"]
    model_row = {"top1": result.get("best_top1"), "params": result.get("params")}
    model_row.update(curvature(ckpt, cfg, int(train_seed), out_dir))
    land = cfg.landscape
    rows = []
    for k in cfg.data_seeds:
        for d in cfg.direction_seeds:
            h5 = tasks.compute_landscape(
                ckpt, out_dir / "surfaces" / f"d{d}_k{k}.h5", data=cfg.train.get("data", "digits"),
                data_root=cfg.train.get("data_root"), samples=int(land["samples"]), data_seed=int(k),
                x=land["grid"], y=land["grid"], seed=int(d), normalization=land["normalization"],
                bias_bn=land["bias_bn"], device=land["device"], forward=land["forward"])
            m = tasks.landscape_row(h5)
            rows.append({"variant": v.key, "label": v.label, "train_seed": int(train_seed), "direction_seed": int(d),
                         "data_seed": int(k), **{name: m.get(name) for name in SURFACE_METRICS}, **model_row,
                         "surface": str(h5.relative_to(out_dir))})
    params = parameters if parameters is not None else point_parameters(cfg, variant, train_seed)
    return write_result(out_dir, notebook="study_point", parameters=params, rows=rows, index=list(POINT_INDEX),
                        columns=list(POINT_COLUMNS), title=f"study {cfg.name}: {v.label}, training seed {train_seed}",
                        seconds=round(time.perf_counter() - t0, 2), train_seconds=result.get("seconds"),
                        reused=result.get("reused"))


def point_parameters(cfg: StudyConfig, variant: str, train_seed: int) -> dict[str, Any]:
    g = grid(cfg)
    return {"config": g["config"], "fingerprint": g["fingerprint"], "variant": variant, "train_seed": int(train_seed)}


def notebook_point(config: str, fingerprint: str, variant: str, train_seed: int, out_dir: str,
                   threads: int | None = None) -> Path:
    """What ``notebooks/study_point.ipynb`` runs: refuses a config changed since the point was queued."""
    cfg = load_config(config)
    if cfg.fingerprint() != fingerprint:
        raise StudyConfigError(f"{config} changed since this point was queued (settings {cfg.fingerprint()}, "
                               f"queued {fingerprint}); rerun python -m bnext.study with --overwrite")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    params = {"config": config, "fingerprint": fingerprint, "variant": variant, "train_seed": int(train_seed)}
    if threads is not None:
        params["threads"] = threads  # the runner's grid point names it (the point is complete when all match)
    return run_point(cfg, variant, int(train_seed), out_dir, threads=threads, parameters=params)


def run_study(cfg: StudyConfig, *, executor: str = "local", jobs: int = 1, threads: int | None = None,
              timeout: float | None = None, force: bool = False, overwrite: bool = False, progress: bool = True,
              wait: bool = False, slurm_conf: dict[str, Any] | None = None, cluster: str = "slurm") -> Any:
    """Run every point not yet complete. Returns the runner's :class:`~bnext.ablate.runner.SweepReport`."""
    from bnext.ablate import grid as grids
    from bnext.ablate.runner import RunOutcome, SweepReport, check_overwrite, is_complete

    g = grid(cfg)
    out = points_dir(cfg)
    if executor == "local":
        from bnext.ablate.runner import run_sweep

        env_threads = {"threads": int(threads)} if threads else {}
        return run_sweep(NOTEBOOK, {**g, **env_threads}, out, timeout=timeout, jobs=jobs, force=force,
                         overwrite=overwrite, progress=progress, summarize=False)
    if executor == "slurm":
        from bnext.ablate.cluster import submit_sweep

        return submit_sweep(NOTEBOOK, g, out, conf=slurm_conf, cluster=cluster, timeout=timeout, force=force,
                            overwrite=overwrite, wait=wait, summarize=False)
    if executor != "inline":
        raise StudyConfigError(f"executor must be local, slurm or inline, got {executor!r}")
    from tqdm.auto import tqdm

    names = grids.swept(g)
    points = [(grids.run_id(p, names), p) for p in grids.expand(g)]
    if not overwrite:
        check_overwrite(out, points)
    report = SweepReport(NOTEBOOK, out)
    for rid, point in tqdm(points, desc=f"study {cfg.name}", unit="point", disable=not progress):
        if not force and is_complete(out / rid, point):
            report.outcomes.append(RunOutcome(rid, point, "skipped"))
            continue
        t0 = time.perf_counter()
        from bnext.ablate.results import atomic_write_json

        (out / rid).mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / rid / "params.json", point)
        run_point(cfg, point["variant"], point["train_seed"], out / rid, threads=threads, parameters=point)
        report.outcomes.append(RunOutcome(rid, point, "ok", time.perf_counter() - t0))
    return report


def collect(cfg: StudyConfig, *, strict: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every complete point of this study (its current settings); and the ids of missing points."""
    from bnext.ablate import grid as grids
    from bnext.ablate.runner import is_complete

    g = grid(cfg)
    out = points_dir(cfg)
    names = grids.swept(g)
    rows: list[dict[str, Any]] = []
    missing = []
    for p in grids.expand(g):
        rid = grids.run_id(p, names)
        point = {k: p[k] for k in ("config", "fingerprint", "variant", "train_seed")}
        if not is_complete(out / rid, point):
            missing.append(rid)
            continue
        res = json.loads((out / rid / "result.json").read_text())
        for r in res["rows"]:
            r = dict(r)
            r["surface"] = str(out / rid / r["surface"])
            rows.append(r)
    if strict and missing:
        raise StudyConfigError(f"{len(missing)} point(s) not complete: {missing[:5]}")
    return rows, missing


def expected_rows(cfg: StudyConfig) -> int:
    return len(cfg.variants) * len(cfg.train_seeds) * len(cfg.direction_seeds) * len(cfg.data_seeds)


def variants_in(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["variant"] not in seen:
            seen.append(r["variant"])
    return seen
