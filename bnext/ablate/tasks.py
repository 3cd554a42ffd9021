"""The glue the notebooks and the demo call: train from a config, evaluate, landscape of a checkpoint.

Each function is a few lines over the library (:mod:`bnext.train`, :mod:`bnext.models`,
:mod:`bnext.data`, :mod:`landscape`), takes plain arguments and returns plain types, so a notebook
cell is one call and the same code path serves ``python -m bnext.demo``.

Reuse (what makes reruns cheap): :func:`train` returns the stored ``result.json`` of a finished
run whose saved ``config.yaml`` equals the requested config, continues an interrupted one from
``last.pt``, and starts over when the config changed; :func:`compute_landscape` resumes a surface
file (only missing grid points are computed) and replaces it when its settings changed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .paths import resolve_path, runs_root

#: config keys that do not change what a run computes (ignored when deciding to reuse a run)
VOLATILE_CONFIG_KEYS = ("progress", "resume", "threads", "output_dir", "name")


# ----------------------------------------------------------------------------- training
def train_config(
    model: str,
    *,
    out_dir: str | os.PathLike[str],
    width: float | None = None,
    options: Mapping[str, Any] | None = None,
    data: str = "digits",
    data_root: str | None = None,
    input_size: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    augment: str | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    steps_per_epoch: int | None = None,
    base: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
) -> Any:
    """A :class:`bnext.train.Config`: ``base`` YAML (or the trainer's defaults), then these arguments,
    then dotted ``overrides`` (``"optim.lr=2e-3"``). Arguments left ``None`` keep the base value."""
    from bnext.train import Config, load_config

    cfg = load_config(resolve_path(base), allow_missing=True) if base else Config()
    d = cfg.to_dict()
    d["name"] = Path(out_dir).name
    d["output_dir"] = str(out_dir)
    d["seed"] = int(seed)
    d["device"] = device
    d["progress"] = bool(progress)
    if threads is not None:
        d["threads"] = int(threads)
    d["model"]["name"] = model
    if width is not None:
        d["model"]["width"] = float(width)
    if options is not None:
        d["model"]["options"] = dict(options)
    if data != d["data"]["name"] or data_root is not None:
        d["data"]["name"], d["data"]["root"] = data, data_root
    for key, value in (("input_size", input_size), ("batch_size", batch_size), ("augment", augment)):
        if value is not None:
            d["data"][key] = value
    if epochs is not None:
        d["train"]["epochs"] = int(epochs)
        d["lr_schedule"]["warmup_epochs"] = min(float(d["lr_schedule"]["warmup_epochs"]), max(epochs - 1, 0))
    if steps_per_epoch is not None:
        d["train"]["steps_per_epoch"] = int(steps_per_epoch)
    cfg = Config.from_dict(d)
    if overrides:
        from bnext.train.config import apply_override, parse_override

        d = cfg.to_dict()
        for text in overrides:
            apply_override(d, *parse_override(text))
        cfg = Config.from_dict(d)
    return cfg


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    import yaml

    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None


def train(config: Any, *, reuse: bool = True) -> dict[str, Any]:
    """Run (or reuse) the training run described by ``config`` (a Config or a nested dict).

    Returns the trainer's result dict plus ``checkpoint`` (``best.pt``), ``run_dir`` and ``reused``
    (True when a finished run with the same config was found and nothing was trained).
    """
    from bnext.train import Config, run

    cfg = config if isinstance(config, Config) else Config.from_dict(dict(config))
    run_dir = cfg.run_dir
    saved = _saved_config(run_dir)
    same = saved is not None and _comparable(saved) == _comparable(json.loads(json.dumps(cfg.to_dict())))
    result_path = run_dir / "result.json"
    stored = None
    if reuse and same and result_path.is_file() and (run_dir / "checkpoints" / "best.pt").is_file():
        stored = json.loads(result_path.read_text())
    if stored is not None and stored.get("finished", True):  # a run stopped early (train.stop_after) goes on
        result = stored
        reused = True
    else:
        if saved is not None and not same:  # another recipe ran here: start over
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            for name in ("result.json", "metrics.jsonl", "trajectory.h5"):
                (run_dir / name).unlink(missing_ok=True)
        d = cfg.to_dict()
        d["resume"] = bool(reuse and same)  # continue an interrupted run of the same recipe
        result = run(Config.from_dict(d))
        reused = False
    result = dict(result)
    result.update(checkpoint=str(run_dir / "checkpoints" / "best.pt"), run_dir=str(run_dir), reused=reused)
    return result


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch lines of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def augmentation_rows(model: str, augmentations: Sequence[str], out_dir: str | os.PathLike[str], *,
                      train_kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Table 6: train ``model`` once per augmentation spec (``standard``, ``mixup``, ``randaugment+mixup``,
    ...); rows ``{"augmentation", "top1", "delta_top1" (vs the first row), "final_top1", "train_seconds"}``."""
    rows = []
    for aug in augmentations:
        kwargs = {**dict(train_kwargs), "augment": aug}
        result = train(train_config(model, out_dir=Path(out_dir) / aug.replace("+", "_"), **kwargs))
        rows.append({"augmentation": aug, "top1": result["best_top1"], "final_top1": result.get("final_top1"),
                     "train_seconds": result.get("seconds"), "checkpoint": result["checkpoint"]})
    for r in rows:
        r["delta_top1"] = r["top1"] - rows[0]["top1"]
    return rows


def bar_chart(labels: Sequence[str], values: Sequence[float], out: str | os.PathLike[str], *,
              xlabel: str = "test top-1 (%)", title: str = "") -> Path:
    """Horizontal bar chart (one bar per table row) as PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 0.42 * len(labels) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(range(len(labels)), values, color="tab:blue", alpha=0.85)
    ax.set_yticks(range(len(labels)), list(labels), fontsize=8)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=9)
    fig.savefig(out, dpi=110)
    return Path(out)


def torch_device(device: str | None = "auto") -> str:
    """``auto``/None -> ``cuda`` when available else ``cpu``; anything else unchanged."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


# ----------------------------------------------------------------------------- evaluation
def eval_tensors(
    data: str = "digits", split: str = "test", *, input_size: int = 32, data_root: str | None = None,
    samples: int | None = None, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A split as tensors, optionally a seeded subset of ``samples`` images (sorted indices)."""
    from bnext.data import load_tensors

    x, y = load_tensors(data, split, input_size=input_size, root=data_root)
    if samples and samples < x.shape[0]:
        gen = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(x.shape[0], generator=gen)[:samples].sort().values
        x, y = x[idx], y[idx]
    return x.contiguous(), y


@torch.inference_mode()
def evaluate_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512,
                   device: str | torch.device = "cpu") -> dict[str, float]:
    """Top-1, top-5 (percent) and mean cross-entropy of ``model`` in eval mode on tensors."""
    from bnext.train.engine import evaluate

    batches = [(x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, x.shape[0], batch_size)]
    was = model.training
    out = evaluate(model.to(device), batches, device=device)
    model.train(was)
    return {"top1": out["top1"], "top5": out["top5"], "loss": out["loss"]}


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], *, data: str = "digits", split: str = "test",
                        data_root: str | None = None, device: str = "cpu") -> dict[str, float]:
    """Rebuild a checkpoint (``bnext.models.load``) and evaluate it on a whole split."""
    from bnext.models import load

    model = load(checkpoint)
    x, y = eval_tensors(data, split, input_size=model.spec["input_size"], data_root=data_root)
    return evaluate_model(model, x, y, device=device)


# ----------------------------------------------------------------------------- landscapes
def _forward_factory(model: torch.nn.Module, probe: torch.Tensor, forward: str) -> Any:
    """The packed XNOR engine for binary models when asked (``packed``) or available (``auto``)."""
    if forward == "torch":
        return None
    from bnext.nn import BinaryConv2d

    if forward == "auto" and not any(isinstance(m, BinaryConv2d) for m in model.modules()):
        return None
    from bnext.packed import packed_forward_factory

    return packed_forward_factory(model, probe, required=forward == "packed")


def compute_landscape(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    data: str = "digits",
    data_root: str | None = None,
    splits: Sequence[str] = ("train",),
    samples: int = 256,
    data_seed: int = 0,
    x: str = "-1:1:11",
    y: str | None = "-1:1:11",
    seed: int = 0,
    normalization: str = "filter",
    bias_bn: str = "ignore",
    device: str | None = "cpu",  # "auto"/None: CUDA when available
    batch_size: int = 512,
    forward: str = "torch",
    progress: bool = False,
    replace_mismatch: bool = True,
) -> Path:
    """A filter-normalized random-direction surface of a checkpoint into ``out`` (HDF5, resumable).

    The settings stored with the file match ``python -m landscape compute``'s. An existing file with
    the same settings is resumed (finished files cost nothing); with other settings it is replaced
    when ``replace_mismatch`` (else :class:`landscape.store.SettingsMismatchError`).
    """
    from bnext.models import load
    from landscape.directions import random_directions
    from landscape.store import SettingsMismatchError, file_sha256
    from landscape.surface import compute_surface

    model = load(checkpoint).eval()
    input_size = model.spec["input_size"]
    tensors = {s: eval_tensors(data, s, input_size=input_size, data_root=data_root, samples=samples,
                               seed=data_seed) for s in splits}
    dirs = random_directions(model, ndim=1 if y is None else 2, seed=seed, normalization=normalization,
                             bias_bn=bias_bn)
    factory = _forward_factory(model, next(iter(tensors.values()))[0][:8], forward)
    meta = {
        "model": model.spec, "checkpoint_path": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": file_sha256(checkpoint),
        "data": {"name": data, "root": data_root, "input_size": input_size, "splits": list(splits),
                 "subset": samples, "data_seed": data_seed},
        "subset_size": samples, "forward": "packed" if factory is not None else "torch", "note": "",
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    device = None if device in (None, "auto") else device
    kwargs = dict(metadata=meta, progress=progress, device=device, batch_size=batch_size, forward_factory=factory,
                  forward="torch" if forward == "torch" else "auto")  # the engine's default asks providers
    try:
        return compute_surface(out, model, dirs, tensors, x, y, mode="resume", **kwargs)
    except SettingsMismatchError:
        if not replace_mismatch:
            raise
        return compute_surface(out, model, dirs, tensors, x, y, mode="overwrite", **kwargs)


def _surface_stamp(surface: str | os.PathLike[str], kinds: Sequence[str], key: str) -> str:
    """Identifies what a set of figures shows: the surface's settings, its values and the plot choices."""
    import hashlib

    import numpy as np

    from landscape.store import read_surface

    s = read_surface(surface)
    h = hashlib.sha256(json.dumps({"settings": s.settings, "kinds": list(kinds), "key": key},
                                  sort_keys=True, default=str).encode())
    for name in sorted(s.values):
        h.update(np.ascontiguousarray(s.values[name]).tobytes())
    return h.hexdigest()


def plot_landscape(
    surface: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    kinds: Sequence[str] = ("contour", "3d", "html"),
    key: str = "train_loss",
    reuse: bool = True,
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 200,
) -> dict[str, Path]:
    """Figures of one surface file (``<stem>_<key>_contour.png``, ``_3d.png``, ``_3d.html``, ...).

    With ``reuse``, figures drawn from the same surface values and choices (recorded in
    ``<stem>_plots.json``) are not drawn again.
    """
    from landscape.figures.plot import plot_all

    surface = Path(surface)
    out_dir = Path(out_dir) if out_dir is not None else surface.parent
    stamp_path = out_dir / f"{surface.stem}_plots.json"
    stamp = _surface_stamp(surface, [*kinds, *formats, f"dpi={dpi}"], key)
    if reuse and stamp_path.is_file():
        try:
            saved = json.loads(stamp_path.read_text())
        except ValueError:
            saved = {}
        files = {k: Path(v) for k, v in saved.get("files", {}).items()}
        if saved.get("stamp") == stamp and files and all(p.is_file() for p in files.values()):
            return files
    files = plot_all(surface, out_dir=out_dir, kinds=list(kinds), key=key, formats=formats, dpi=dpi)
    stamp_path.write_text(json.dumps({"stamp": stamp, "files": {k: str(v) for k, v in files.items()}}, indent=1))
    return files


def landscape_metrics(surface: str | os.PathLike[str], key: str = "train_loss") -> dict[str, Any]:
    """Smoothness metrics of a surface (roughness, convexity share, basin width; stored in the file)."""
    from landscape.metrics import compute_and_store

    return compute_and_store(surface, [key])[key]


METRIC_KEYS = ("roughness", "convexity_share", "basin_width_x", "basin_width_y", "basin_diameter")


def landscape_row(surface: str | os.PathLike[str], key: str = "train_loss") -> dict[str, Any]:
    """The metrics a table shows for one surface: centre value, min, max and :data:`METRIC_KEYS`."""
    m = landscape_metrics(surface, key)
    row = {"loss_centre": m.get("basin_centre_value"), "loss_min": m.get("min"), "loss_max": m.get("max")}
    row.update({k: m.get(k) for k in METRIC_KEYS})
    row["basin_truncated"] = m.get("basin_truncated")
    return row


def compare_landscapes(
    surfaces: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, labels: Sequence[str],
    key: str = "train_loss", log: bool | None = None, formats: Sequence[str] = ("png", "pdf"), dpi: int = 200,
    width: float | None = 7.0,
) -> tuple[Path, list[dict[str, Any]]]:
    """Multi-panel figure with shared levels (paper Fig. 2 a-g) plus the metrics table (``.md``/``.csv``),
    ``width`` inches wide in print (7.0: a double column; fonts at their printed size)."""
    from landscape.figures.compare import compare

    return compare(list(surfaces), out, key=key, labels=list(labels), log=log, formats=formats, dpi=dpi,
                   width=width)


class Stopwatch:
    """Seconds per named stage (``with watch("train resnet18"): ...``), for budgets and reports."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str) -> Stopwatch._Stage:
        return Stopwatch._Stage(self, name)

    class _Stage:
        def __init__(self, watch: Stopwatch, name: str) -> None:
            self.watch, self.name = watch, name

        def __enter__(self) -> None:
            self.t0 = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            self.watch.seconds[self.name] = self.watch.seconds.get(self.name, 0.0) + time.perf_counter() - self.t0

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


# ----------------------------------------------------------------------------- browsing surfaces
def find_surfaces(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every ``*.h5`` surface file under ``root`` (default ``runs/``), newest first; trajectories skipped."""
    from landscape.store import SurfaceFileError, read_surface

    root = resolve_path(root) if root is not None else runs_root()
    found = []
    for p in sorted(Path(root).rglob("*.h5"), key=lambda q: q.stat().st_mtime, reverse=True):
        if p.name == "trajectory.h5":
            continue
        try:
            read_surface(p)
        except SurfaceFileError:
            continue
        found.append(p)
    return found


def slice_surface(surface: str | os.PathLike[str], *, axis: str = "x", at: float = 0.0,
                  key: str = "train_loss") -> dict[str, Any]:
    """A 1D cut through a 2D surface: along ``axis`` at the grid line nearest ``other axis = at``.

    Returns ``{"coordinates", "values", "axis", "at"}`` (``at`` is the grid value actually used).
    """
    import numpy as np

    from landscape.store import read_surface

    s = read_surface(surface)
    if key not in s.values:
        raise KeyError(f"{surface}: no value {key!r}; available: {s.available()}")
    f = s.values[key]
    if s.ndim == 1:
        return {"coordinates": s.xcoordinates.tolist(), "values": f.tolist(), "axis": "x", "at": None}
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    other = s.ycoordinates if axis == "x" else s.xcoordinates
    k = int(np.argmin(np.abs(other - at)))
    values = f[:, k] if axis == "x" else f[k, :]
    coords = s.xcoordinates if axis == "x" else s.ycoordinates
    return {"coordinates": coords.tolist(), "values": values.tolist(), "axis": axis, "at": float(other[k])}


def plot_slices(slices: Mapping[str, Mapping[str, Any]], out: str | os.PathLike[str], *,
                ylabel: str = "train loss", log: bool = False) -> Path:
    """Overlay 1D cuts (:func:`slice_surface`) of several surfaces in one PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for label, s in slices.items():
        at = f" at {'y' if s['axis'] == 'x' else 'x'}={s['at']:.2g}" if s.get("at") is not None else ""
        ax.plot(s["coordinates"], s["values"], marker="o", markersize=3, label=f"{label}{at}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("distance along the direction")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.savefig(out, dpi=120)
    return Path(out)


# ----------------------------------------------------------------------------- quantization (Table 7)
def quantization_table(
    checkpoint: str | os.PathLike[str],
    *,
    specs: Sequence[str] | None = None,
    data: str = "digits",
    data_root: str | None = None,
    finetune_epochs: int = 0,
    lr: float = 1e-7,
    batch_size: int = 128,
    calib_batches: int | None = 8,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Table 7 on a trained checkpoint: top-1 under each I-S-E-O spec (``bnext.quant.table7``).

    Activation ranges are calibrated on (un-augmented) training images; ``finetune_epochs`` > 0
    fine-tunes each quantized copy as in section 7.5 (AdamW, lr 1e-7, binary layers frozen).
    """
    from bnext.models import load
    from bnext.quant import TABLE7_SPECS, table7

    device = torch_device(device)
    model = load(checkpoint).eval()
    size = model.spec["input_size"]
    xtr, ytr = eval_tensors(data, "train", input_size=size, data_root=data_root)
    xte, yte = eval_tensors(data, "test", input_size=size, data_root=data_root)

    def batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, x.shape[0], batch_size)]

    rows = table7(model, batches(xtr, ytr), batches(xte, yte), specs=tuple(specs or TABLE7_SPECS),
                  finetune_epochs=finetune_epochs, lr=lr, calib_batches=calib_batches, device=device)
    for r in rows:
        r["finetune_epochs"] = finetune_epochs
    return rows


# ----------------------------------------------------------------------------- distillation (Tables 5, 8)
def parse_model_spec(text: str) -> tuple[str, float | None]:
    """``"resnet18@0.5"`` -> ``("resnet18", 0.5)``; ``"bireal18"`` -> ``("bireal18", None)``."""
    name, _, width = str(text).partition("@")
    try:
        return name.strip(), float(width) if width else None
    except ValueError:
        raise ValueError(f"model spec {text!r} must be NAME or NAME@WIDTH, e.g. resnet18@0.5") from None


def teacher_rows(teachers: Sequence[str], out_dir: str | os.PathLike[str], *,
                 train_kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Train (or reuse) each teacher ``NAME[@WIDTH]`` and compute its Knowledge Complexity (Eq. 3).

    Rows ``{"teacher", "params", "top1", "kc", "checkpoint"}`` sorted by increasing KC.
    """
    from bnext.kd import knowledge_complexity

    rows = []
    for spec in teachers:
        name, width = parse_model_spec(spec)
        key = f"teacher_{name}" + (f"_w{width:g}" if width is not None else "")
        kwargs = dict(train_kwargs)
        if width is not None:
            kwargs["width"] = width
        result = train(train_config(name, out_dir=Path(out_dir) / key, **kwargs))
        top1 = float(result["best_top1"])
        rows.append({"teacher": spec, "params": int(result["params"]), "top1": top1,
                     "kc": knowledge_complexity(result["params"], top1 / 100.0), "checkpoint": result["checkpoint"]})
    return sorted(rows, key=lambda r: r["kc"])


def kd_overrides(strong: Mapping[str, Any] | None, assistants: Sequence[Mapping[str, Any]] = (), *,
                 ensemble: str = "gap_sensitive", temperature: float = 1.0, hard_weight: float = 0.0) -> list[str]:
    """Trainer overrides for distillation from workbench-checkpoint teachers (rows of :func:`teacher_rows`)."""
    if strong is None:
        return ["kd.enabled=false"]
    import yaml

    def teacher(r: Mapping[str, Any]) -> dict[str, Any]:
        return {"arch": None, "weights": str(r["checkpoint"]), "accuracy": float(r["top1"]) / 100.0}

    dump = lambda v: yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()  # noqa: E731
    return ["kd.enabled=true", f"kd.strong={dump(teacher(strong))}",
            f"kd.assistants={dump([teacher(a) for a in assistants])}", f"kd.ensemble={ensemble}",
            f"kd.temperature={temperature}", f"kd.hard_weight={hard_weight}", "kd.order=kc"]


def kd_student_runs(
    teachers: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    *,
    student: str,
    train_kwargs: Mapping[str, Any],
    settings: Sequence[str] = ("none", "single_low_kc", "single_high_kc", "ensemble_mean", "ensemble_gap"),
) -> list[dict[str, Any]]:
    """Train the student under each KD setting and return one row per setting (Table 5 on this data).

    Settings: ``none`` (hard labels), ``single_low_kc`` / ``single_high_kc`` (one teacher: the lowest
    / highest Knowledge Complexity), ``ensemble_mean`` (all teachers, plain average of the KD terms)
    and ``ensemble_gap`` (all teachers, gap-sensitive weights of Eq. 4, assistants joining in
    increasing KC as in Algorithm 1; the strong teacher is the most accurate).
    """
    by_kc = sorted(teachers, key=lambda r: r["kc"])
    strongest = max(teachers, key=lambda r: r["top1"]) if teachers else None
    others = [t for t in by_kc if t is not strongest]
    plans: dict[str, tuple[Any, list, str]] = {
        "none": (None, [], "gap_sensitive"),
        "single_low_kc": (by_kc[0] if by_kc else None, [], "gap_sensitive"),
        "single_high_kc": (by_kc[-1] if by_kc else None, [], "gap_sensitive"),
        "ensemble_mean": (strongest, others, "mean"),
        "ensemble_gap": (strongest, others, "gap_sensitive"),
    }
    unknown = [s for s in settings if s not in plans]
    if unknown:
        raise ValueError(f"unknown KD setting(s) {unknown}; choose from {list(plans)}")
    rows = []
    for setting in settings:
        strong, assistants, ensemble = plans[setting]
        if setting != "none" and strong is None:
            raise ValueError(f"KD setting {setting!r} needs at least one teacher")
        kwargs = dict(train_kwargs)
        kwargs["overrides"] = list(kwargs.get("overrides", ())) + kd_overrides(strong, assistants, ensemble=ensemble)
        result = train(train_config(student, out_dir=Path(out_dir) / f"student_{setting}", **kwargs))
        names = [] if strong is None else [strong["teacher"]] + [a["teacher"] for a in assistants]
        rows.append({"setting": setting, "teachers": " + ".join(names) or "-", "ensemble": ensemble if names else "-",
                     "top1": result["best_top1"], "final_top1": result.get("final_top1"),
                     "checkpoint": result["checkpoint"]})
    return rows


def table8_rows() -> list[dict[str, Any]]:
    """Paper Table 8: KC of the torchvision teachers (builders on the meta device; nothing downloaded)."""
    from bnext.kd import TABLE8, teacher_table

    return [{"teacher": t.arch, "params": t.params, "top1": t.accuracy, "kc": t.kc, "paper_kc": TABLE8.get(t.arch)}
            for t in teacher_table()]


def checkpoint_model(checkpoint: str | os.PathLike[str]) -> str:
    """The registry name stored in a workbench checkpoint."""
    from bnext.models import read_checkpoint

    return str(read_checkpoint(checkpoint)["model"])
