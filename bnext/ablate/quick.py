"""The notebooks' ``quick`` preset: every notebook in about a minute on 2 CPU cores.

``quick=True`` (a parameter of every notebook) replaces the size knobs that are still at the
notebook's defaults with tiny values (width 1/16, 8x8 inputs, one epoch, one torch thread, 5x5
landscape grids); knobs you set yourself stay. It is a first look and a smoke test, not a result:
the numbers it gives are from models trained for one epoch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: knobs every training notebook has
_TRAINING = {"width": 0.0625, "input_size": 8, "epochs": 1, "threads": 1}
_LANDSCAPE = {"grid": "-1:1:5", "samples": 64}

#: the preset of each notebook (notebooks/<name>.ipynb)
PRESETS: dict[str, dict[str, Any]] = {
    "module_ablation": {**_TRAINING, **_LANDSCAPE},
    "augmentation_ablation": {**_TRAINING, "steps_per_epoch": 8},
    "quantization_ablation": {**_TRAINING, "calib_batches": 2},
    "distillation_ablation": {**_TRAINING, "steps_per_epoch": 8,
                              "teachers": ["resnet18@0.125", "resnet18@0.0625", "bireal18@0.0625"]},
    "landscape_figures": {**_TRAINING, **_LANDSCAPE},
    "explore": {},  # explore makes its own two small surfaces instead: quick_surfaces
}


def notebook_path(notebook: str) -> Path | None:
    """``notebooks/<notebook>.ipynb`` of this checkout, or None when the package is installed elsewhere."""
    from .paths import repo_root

    root = repo_root()
    path = root / "notebooks" / f"{notebook}.ipynb" if root is not None else None
    return path if path is not None and path.is_file() else None


def quick_preset(notebook: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The preset values for the knobs of ``notebook`` whose value in ``values`` is still the default.

    Defaults come from the notebook's ``parameters`` cell (papermill's reader); without the
    notebook file every preset value applies. Returns only what changes (apply it with
    ``globals().update(...)`` in the notebook).
    """
    if notebook not in PRESETS:
        raise ValueError(f"no quick preset for notebook {notebook!r}; known: {sorted(PRESETS)}")
    path = notebook_path(notebook)
    if path is None:
        return dict(PRESETS[notebook])
    from .grid import notebook_parameters

    defaults = notebook_parameters(path)
    unknown = sorted(set(PRESETS[notebook]) - set(defaults))
    if unknown:
        raise ValueError(f"quick preset of {notebook} names {unknown}, which its parameters cell lacks")
    return {k: v for k, v in PRESETS[notebook].items()
            if values.get(k) == defaults[k]["default"] and values.get(k) != v}


def quick_surfaces(out_dir: str | os.PathLike[str], *, device: str = "cpu") -> list[Path]:
    """Two small surfaces to explore (ResNet-18 and BNext-18 at width 1/16, 8x8 digits, one epoch,
    5x5 grid of 64 training images), trained and computed under ``out_dir`` (reused on reruns)."""
    from . import tasks

    out = Path(out_dir)
    surfaces = []
    for model in ("resnet18", "bnext18"):
        cfg = tasks.train_config(model, out_dir=out / model, base=tasks.resolve_path("configs/digits_demo.yaml"),
                                 device=device, overrides=["trajectory.every=0"], **_TRAINING)
        checkpoint = tasks.train(cfg)["checkpoint"]
        surfaces.append(tasks.compute_landscape(checkpoint, out / model / "landscape.h5", x=_LANDSCAPE["grid"],
                                                y=_LANDSCAPE["grid"], samples=_LANDSCAPE["samples"], device=device))
    return surfaces
