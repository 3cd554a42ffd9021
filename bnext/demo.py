"""The main job (``make demo``): the paper's Fig. 2 on the embedded digits data, on a laptop CPU.

    python -m bnext.demo [--quick] [--out runs/demo] [--jobs 2] [--models KEY ...] [--fresh]

Trains the seven Fig. 2 models (ResNet-18 real-valued, BinaryNet-18, Bi-Real-18, Real2Binary-18,
BNext-18 with Info-RCP only, ELM-Attention only, and both) at a CPU-friendly width, computes a 2D
filter-normalized loss landscape of each (random directions, biases/BN ignored, on a fixed subset
of the training images) and writes to ``runs/demo/``:

* ``fig2_contours.png`` — all seven landscapes side by side, shared contour levels of log(loss)
  (Fig. 2 a-g); ``fig6_surfaces.png`` — the same as 3D surfaces with one z range;
* ``<model>/landscape_train_loss_3d.png`` and ``landscape_train_loss_3d.html`` (interactive, opens offline), and
  ``landscape_train_loss_contour.png`` per model (log levels where the loss spans decades);
* ``<model>/landscape.h5`` — the grids (landscape store schema; ``python -m landscape plot`` reads them);
* ``<model>/landscape_d1.h5``, ``landscape_d2.h5`` — two more random planes (direction seeds 1, 2): the
  table's intervals;
* ``table.md`` / ``table.tex`` / ``table.csv`` — test accuracy, smoothness metrics as mean [95% interval]
  over the 3 planes, and curvature with the estimators' own error (the Hessian's top eigenvalue by Lanczos
  +- its Ritz residual, its trace by Hutchinson to 5% relative error +- 1.96 standard errors; for binary
  models the straight-through surrogate's, see README "Curvature") per model (Markdown, LaTeX booktabs;
  the CSV has every number); figures as PNG and PDF (``--format png,pdf,svg``, ``--dpi``);
* ``verdicts.md`` — one line per Fig. 2 ordering (:mod:`bnext.study`; with one training seed per model
  never resolved: ``python -m bnext.study configs/studies/fig2_digits.yaml`` tests them);
* ``<model>/hessian_demo.json`` — the curvature figures (reused while checkpoint and settings match);
* ``timings.json`` — seconds per stage.

Budget: at most 10 minutes on 2 CPU cores; the default settings take about 3-4 minutes on an idle
2-core machine. The models are independent, so they run in ``--jobs`` worker processes (default 2,
one torch thread each, which beats one process with two threads for models this small and
degrades gracefully on a loaded machine). Reruns reuse finished parts: a trained model with the
same recipe is not retrained, a surface file only gets its missing points, figures of unchanged
surfaces are not redrawn. ``--quick`` is a seconds-long smoke version for tests.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting are ruinous on a shared or loaded 2-core machine (measured
# here: ~100x slower forwards with 2 busy threads); must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import queue as _queue  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from .cli import ArgumentParser


@dataclass(frozen=True)
class Settings:
    """What the demo trains and evaluates (the budget knobs)."""

    width: float = 0.25  # channel multiplier of every model (ResNet-18 widths x 0.25)
    input_size: int = 16  # digits are 8x8; upsampled to 16x16
    epochs: int = 5
    batch_size: int = 64
    steps_per_epoch: int | None = None
    grid: str = "-1:1:11"  # x and y: 11 x 11 points
    samples: int = 200  # training images per grid point (fixed seeded subset)
    hessian_samples: int = 64  # training images for the curvature (seeded subset)
    hessian_iter: int = 10  # Lanczos products for the top eigenvalue
    hessian_probes: int = 20  # cap of Hutchinson probes for the trace (it stops earlier at trace_target)
    trace_target: float = 0.05  # relative standard error the trace aims at
    direction_seeds: int = 3  # random planes per model (seeds 0, 1, ...): the table's intervals

    def train_kwargs(self, threads: int) -> dict[str, Any]:
        return {"width": self.width, "input_size": self.input_size, "epochs": self.epochs,
                "batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch, "threads": threads,
                "data": "digits", "base": _base_config(), "overrides": ("trajectory.every=0",)}

    def landscape_kwargs(self) -> dict[str, Any]:
        return {"x": self.grid, "y": self.grid, "samples": self.samples, "splits": ("train",),
                "normalization": "filter", "bias_bn": "ignore", "device": "cpu", "forward": "torch"}


FULL = Settings()
QUICK = Settings(width=0.0625, input_size=8, epochs=1, batch_size=64, steps_per_epoch=3, grid="-1:1:5", samples=64,
                 hessian_samples=32, hessian_iter=4, hessian_probes=4, direction_seeds=2)
PLOTS = ("contour", "3d", "html")
CURVATURE_COLUMNS = ("top_eig", "trace", "trace_stderr", "hessian_seconds")
#: the columns printed with intervals (mean [95% interval]): over direction seeds for the surface metrics,
#: the estimator's own error for the curvature (Ritz residual, 1.96 Hutchinson standard errors)
INTERVAL_COLUMNS = ("roughness", "convexity_share", "basin_diameter", "loss_centre", "top_eig", "trace")


def table_columns() -> tuple[str, ...]:
    """The demo table: the Fig. 2 table's columns, then the curvature columns."""
    from .ablate.figures import TABLE_COLUMNS

    return (*TABLE_COLUMNS, *CURVATURE_COLUMNS)


def _curvature(row: dict[str, Any], out_dir: str | Path, settings: Settings, watch: Any) -> dict[str, Any]:
    """Top Hessian eigenvalue and trace of a trained model (cached in ``<model>/hessian_demo.json``)."""
    from landscape.store import file_sha256

    from .study.curvature import checkpoint_curvature

    path = Path(out_dir) / row["key"] / "hessian_demo.json"
    key = {"checkpoint_sha256": file_sha256(row["checkpoint"]), "samples": settings.hessian_samples,
           "iterations": settings.hessian_iter, "probes": settings.hessian_probes, "target": settings.trace_target}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["curvature"]
    with watch(f"hessian {row['key']}"):
        curv = checkpoint_curvature(row["checkpoint"], {
            "samples": settings.hessian_samples, "lanczos_iter": settings.hessian_iter, "lanczos_tol": 1e-3,
            "trace_cap": settings.hessian_probes, "trace_target": settings.trace_target, "sharpness_epsilon": None})
    from .io import atomic_open

    with atomic_open(path, "w") as fh:
        json.dump({"key": key, "curvature": curv}, fh, indent=2)
    return curv


def _directions(row: dict[str, Any], out_dir: str | Path, settings: Settings, watch: Any) -> list[dict[str, Any]]:
    """The surface metrics of ``settings.direction_seeds`` random planes (seed 0 is ``landscape.h5``, seed d
    ``landscape_d<d>.h5``; resumable like it)."""
    from .ablate import tasks

    found = [{"direction_seed": 0, **{k: row.get(k) for k in (*tasks.METRIC_KEYS, "loss_centre")}}]
    for d in range(1, settings.direction_seeds):
        with watch(f"landscape {row['key']}"):
            h5 = tasks.compute_landscape(row["checkpoint"], Path(out_dir) / row["key"] / f"landscape_d{d}.h5",
                                         seed=d, **settings.landscape_kwargs())
            found.append({"direction_seed": d, **tasks.landscape_row(h5)})
    return found


def _base_config() -> str | None:
    """The shipped short digits recipe (optimizer, schedules) when present; budget knobs are set here."""
    path = Path(__file__).resolve().parent.parent / "configs" / "digits_demo.yaml"
    return str(path) if path.is_file() else None


# ----------------------------------------------------------------------------- worker side
_STAGES: Any = None


def _init_worker(stages: Any, threads: int) -> None:
    global _STAGES
    _STAGES = stages
    import torch

    torch.set_num_threads(threads)


def _job(variant: Any, out_dir: str, settings: Settings, threads: int,
         figure_kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    from .ablate import figures, tasks

    watch = tasks.Stopwatch()

    def stage(name: str) -> None:
        if _STAGES is not None:
            _STAGES.put(name)

    row = figures.run_variant(variant, out_dir, train=settings.train_kwargs(threads),
                              landscape=settings.landscape_kwargs(), plots=PLOTS, watch=watch, stage=stage,
                              **figure_kw)
    row.update(_curvature(row, out_dir, settings, watch))
    row["directions"] = _directions(row, out_dir, settings, watch)
    return row, watch.seconds


# ----------------------------------------------------------------------------- main side
# heavy models first so the two workers finish together
_COST_ORDER = ("bnext18", "bnext18_info_rcp", "real2binary18", "bnext18_elm", "bireal18", "binarynet18", "resnet18")


def run_demo(out_dir: Path, settings: Settings, *, keys: list[str] | None = None, jobs: int = 2,
             threads: int = 1, progress: bool = True, formats: tuple[str, ...] = ("png", "pdf"),
             dpi: int = 200) -> dict[str, Any]:
    """Train, landscape and plot every selected Fig. 2 model, then the panel and the table."""
    figure_kw = {"formats": formats, "dpi": dpi}
    from tqdm.auto import tqdm

    from .ablate import figures, tasks

    variants = figures.select(keys)
    out_dir.mkdir(parents=True, exist_ok=True)
    watch = tasks.Stopwatch()
    bar = tqdm(total=2 * len(variants) + 1, desc="demo", unit="stage", disable=not progress, dynamic_ncols=True)
    rows: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    started: set[str] = set()

    def on_stage(name: str) -> None:
        if name in started:
            return
        # a stage message means the previous stage of that model is done
        kind, _, key = name.partition(" ")
        if kind == "landscape":
            bar.update(1)
        started.add(name)
        bar.set_postfix_str(name)

    if jobs <= 1:
        for v in variants:
            try:
                rows[v.key] = figures.run_variant(v, out_dir, train=settings.train_kwargs(threads),
                                                  landscape=settings.landscape_kwargs(), plots=PLOTS, watch=watch,
                                                  stage=on_stage, **figure_kw)
                rows[v.key].update(_curvature(rows[v.key], out_dir, settings, watch))
                rows[v.key]["directions"] = _directions(rows[v.key], out_dir, settings, watch)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other models
                errors[v.key] = f"{exc.__class__.__name__}: {exc}"
            bar.update(2 if v.key in errors and f"landscape {v.key}" not in started else 1)
    else:
        ctx = mp.get_context("spawn")
        stages = ctx.Queue()
        order = sorted(variants, key=lambda v: _COST_ORDER.index(v.key) if v.key in _COST_ORDER else -1)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(stages, threads)) as pool:
            futures = {pool.submit(_job, v, str(out_dir), settings, threads, figure_kw): v for v in order}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                while True:
                    try:
                        on_stage(stages.get_nowait())
                    except _queue.Empty:
                        break
                for fut in done:
                    v = futures[fut]
                    try:
                        row, seconds = fut.result()
                        rows[v.key] = row
                        for k, s in seconds.items():
                            watch.seconds[k] = watch.seconds.get(k, 0.0) + s
                    except Exception as exc:  # noqa: BLE001
                        errors[v.key] = f"{exc.__class__.__name__}: {exc}"
                    bar.update(2 if v.key in errors and f"landscape {v.key}" not in started else 1)
    ordered = [rows[v.key] for v in variants if v.key in rows]
    bar.set_postfix_str("panels")
    out: dict[str, Any] = {"panel": None, "panel_3d": None, "table": None, "study": None}
    if ordered:
        with watch("panels"):
            out = figures.panels(ordered, out_dir, log=True, **figure_kw)
            out["study"] = intervals(ordered)
            out["table"] = write_interval_table(ordered, out["study"], out_dir)
    bar.update(1)
    bar.close()
    return {"rows": ordered, "errors": errors, **out, "seconds": dict(watch.seconds)}


def intervals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means with 95% intervals over each model's direction seeds, and the Fig. 2 verdicts
    (:func:`bnext.study.analysis.analyze`; one training seed, so no architecture claim can be resolved)."""
    from .study.analysis import analyze
    from .study.config import SURFACE_METRICS, StudyConfigError, load

    flat = [{"variant": r["key"], "train_seed": 0, **d, "top1": r.get("top1"), "top_eig": r.get("top_eig"),
             "trace": r.get("trace")} for r in rows for d in r.get("directions", [])]
    keys = [r["key"] for r in rows]
    claims = []
    path = Path(__file__).resolve().parent.parent / "configs" / "studies" / "fig2_digits.yaml"
    try:
        claims = [c for c in load(path).claims if c.smoother in keys and c.than in keys]
    except StudyConfigError:
        pass
    result = analyze(flat, keys, SURFACE_METRICS, claims=claims, bootstrap=1000)
    for r in rows:
        for m in SURFACE_METRICS:
            s = result["summary"][m][r["key"]]
            r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"] = s["mean"], s["ci_low"], s["ci_high"]
        r["directions_n"] = len(r.get("directions", []))
    return result


def _interval_cell(row: dict[str, Any], col: str) -> str:
    from .study.curvature import estimator_interval
    from .study.report import fmt

    if col in ("top_eig", "trace"):
        iv = estimator_interval(row, col)
        if iv is None:
            return fmt(row.get(col))
        cap = "" if row.get(f"{col}_converged", True) else " (cap)"
        return f"{fmt(row[col])} [{fmt(iv[0])}, {fmt(iv[1])}]{cap}"
    return f"{fmt(row.get(col))} [{fmt(row.get(f'{col}_ci_low'))}, {fmt(row.get(f'{col}_ci_high'))}]"


def display_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The demo table as printed: accuracy, n planes, then ``mean [95% interval]`` per metric."""
    from .study.report import fmt

    cols = ["model", "params", "top1", "n", *INTERVAL_COLUMNS]
    out = []
    for r in rows:
        d = {"model": r["model"], "params": r.get("params"), "top1": fmt(r.get("top1"), 4),
             "n": f"1x{r.get('directions_n', 1)}"}
        d.update({c: _interval_cell(r, c) for c in INTERVAL_COLUMNS})
        out.append(d)
    return out, cols


def write_interval_table(rows: list[dict[str, Any]], result: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``table.csv`` (every number, intervals as ``<metric>_ci_low/high``), ``table.md`` / ``table.tex`` with
    the intervals, and ``verdicts.md``."""
    from .ablate.figures import write_table
    from .ablate.results import latex_table, markdown_table
    from .io import atomic_open

    flat = [{k: v for k, v in r.items() if k != "directions"} for r in rows]
    paths = write_table(flat, out_dir, columns=table_columns())
    shown, cols = display_rows(rows)
    with atomic_open(paths["markdown"], "w") as fh:
        fh.write(markdown_table(shown, cols))
    with atomic_open(paths["latex"], "w") as fh:
        fh.write(latex_table(shown, cols, caption="Fig. 2 models on digits: mean [95% interval] over random "
                             "planes (surface metrics) or the estimator's error (top eigenvalue: Ritz residual; "
                             "trace: 1.96 Hutchinson standard errors)"))
    paths["verdicts"] = out_dir / "verdicts.md"
    with atomic_open(paths["verdicts"], "w") as fh:
        fh.write("".join(f"- {line}\n" for line in verdict_lines(result, rows)))
    return paths


def verdict_lines(result: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """One line per Fig. 2 ordering: the difference with its interval over the planes, the share of
    bootstrap draws in the claimed order, and the verdict (one training seed: never resolved)."""
    labels = {r["key"]: r["model"] for r in rows}
    out = []
    for v in result["verdicts"]:
        out.append(f"{labels[v['smoother']]} smoother than {labels[v['than']]}: {v['metric']} difference "
                   f"{v['diff']:+.3g} [{v['diff_ci_low']:+.3g}, {v['diff_ci_high']:+.3g}], claimed order in "
                   f"{100 * v['p_direction']:.0f}% of draws -> {v['verdict']}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m bnext.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny models, 1 short epoch, 5x5 grid (a smoke test)")
    p.add_argument("--out", default=None, help="output folder (default runs/demo, or runs/demo_quick with --quick)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="models trained in parallel worker processes (default: 2 on a 2-core machine)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per job (default 1 with several jobs, else all cores)")
    p.add_argument("--models", nargs="+", default=None, metavar="KEY",
                   help="subset of: resnet18 binarynet18 bireal18 real2binary18 bnext18_info_rcp bnext18_elm bnext18")
    p.add_argument("--fresh", action="store_true", help="delete the output folder first (no reuse)")
    p.add_argument("--no-progress", action="store_true")
    from landscape.figures.style import add_output_args

    add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    settings = QUICK if args.quick else FULL
    out_dir = Path(args.out or ("runs/demo_quick" if args.quick else "runs/demo"))
    if args.fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    jobs = max(1, args.jobs)
    threads = args.threads or (1 if jobs > 1 else max(1, os.cpu_count() or 1))
    from .ablate import figures

    try:
        figures.select(args.models)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"BNext workbench demo: Fig. 2 models on digits ({'quick' if args.quick else 'full'}: width "
          f"{settings.width}, {settings.input_size}x{settings.input_size} inputs, {settings.epochs} epochs, "
          f"{settings.grid} grid on {settings.samples} training images; {jobs} job(s) x {threads} thread(s))",
          flush=True)
    result = run_demo(out_dir, settings, keys=args.models, jobs=jobs, threads=threads,
                      progress=not args.no_progress, formats=args.formats, dpi=args.dpi)
    wall = time.perf_counter() - t0
    timings = {"wall_seconds": round(wall, 2), "settings": asdict(settings), "jobs": jobs, "threads": threads,
               "stages": {k: round(v, 2) for k, v in result["seconds"].items()}}
    (out_dir / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")

    from .ablate.figures import format_table

    print()
    if result["rows"]:
        n_dir = settings.direction_seeds
        print(f"Test accuracy (%) and smoothness of the train-loss landscape, mean [95% interval] over {n_dir} random")
        print("planes per model (n = training seeds x planes; roughness: lower is smoother; convexity_share: share of")
        print("locally convex grid points; basin_diameter in direction units); top_eig / trace: Hessian top eigenvalue")
        print("(Lanczos, [+- Ritz residual]) and trace (Hutchinson to 5% relative error, [+- 1.96 standard errors];")
        print("'(cap)': the probe cap came first) of the train loss (binary models: the straight-through surrogate's):")
        shown, cols = display_rows(result["rows"])
        print(format_table(shown, cols))
        print()
        print("Fig. 2 orderings (one training seed per model: the planes say how sure each number is, not whether")
        print("an architecture is smoother; python -m bnext.study configs/studies/fig2_digits.yaml tests that):")
        for line in verdict_lines(result["study"], result["rows"]) if result["study"] else []:
            print(f"  - {line}")
        print()
        print(f"Fig. 2 contour panel (log loss, shared levels): {result['panel']}")
        print(f"3D surfaces side by side (shared z range):      {result['panel_3d']}")
        print(f"3D surface per model:  {out_dir}/<model>/landscape_train_loss_3d.png and _3d.html (interactive)")
        print(f"grids (HDF5):          {out_dir}/<model>/landscape.h5")
        t = result["table"]
        print(f"table:                 {t['markdown']}, {t['latex']} (LaTeX) and {t['csv']}")
    for key, err in result["errors"].items():
        print(f"FAILED {key}: {err}", file=sys.stderr)
    reused = sum(bool(r.get("reused")) for r in result["rows"])
    print(f"total wall time {wall:.0f} s ({reused} of {len(result['rows'])} trained models reused); "
          f"stage times in {out_dir / 'timings.json'}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    # run the importable module's main, so worker processes unpickle bnext.demo objects, not __main__ ones
    from bnext.demo import main as _main

    raise SystemExit(_main())
