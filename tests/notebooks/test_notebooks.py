"""Every notebook runs under papermill (kernel ``python3`` = this interpreter) with tiny parameters
or its ``quick`` preset, in its own process with its own working directory, and writes a
``result.json`` with real content; ``make lab`` registers the kernel the notebooks name; the
interactive figure survives ``nbconvert --to html``."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bnext.ablate.grid import notebook_parameters
from bnext.ablate.quick import PRESETS, quick_preset
from bnext.ablate.runner import execute_point

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["module_ablation", "augmentation_ablation", "quantization_ablation", "distillation_ablation",
         "landscape_figures", "explore"]
TINY = {"width": 0.0625, "input_size": 8, "epochs": 1, "batch_size": 64, "steps_per_epoch": 2, "threads": 1,
        "device": "cpu"}
TIMEOUT = 300


def run_notebook(name: str, tmp_path: Path, **params) -> dict:
    run_dir = tmp_path / "runs" / name
    outcome = execute_point(NOTEBOOKS / f"{name}.ipynb", run_dir, params, timeout=TIMEOUT, cwd=tmp_path)
    if outcome.status != "ok":
        failure = outcome.failure or {}
        pytest.fail(f"{name} {outcome.status}: cell {failure.get('cell_index')} {failure.get('error')}: "
                    f"{failure.get('message')}\n{failure.get('traceback', '')[-3000:]}\n{failure.get('log_tail', '')}")
    result = json.loads((run_dir / "result.json").read_text())
    assert result["format"] == "bnext-ablation-result" and result["notebook"] == name
    for key, value in params.items():
        assert result["parameters"][key] == value
    for rel in result["figures"].values():
        assert (run_dir / rel).stat().st_size > 1000, rel
    assert (run_dir / f"{name}.ipynb").is_file()  # the executed copy
    return result


def top1_ok(value) -> bool:
    return isinstance(value, int | float) and 0.0 <= value <= 100.0


def test_notebooks_exist_with_parameters_cell_and_no_outputs():
    import ast

    import nbformat
    import papermill

    for name in NAMES:
        path = NOTEBOOKS / f"{name}.ipynb"
        params = notebook_parameters(path)
        # papermill's own parser (JupyterLab/papermill users) sees every assignment of the cell
        cell = next(c for c in nbformat.read(str(path), as_version=4).cells
                    if "parameters" in c.metadata.get("tags", []))
        names = {t.id for n in ast.parse(cell.source).body for t in n.targets}
        assert names == set(papermill.inspect_notebook(str(path))) == set(params), name
        assert "out_dir" in params, name
        assert '"output_type"' not in path.read_text(), f"{name} is committed with outputs"
        assert params["quick"]["default"] is False, name
        if name != "explore":
            assert params["data"]["default"] == "digits" and "data_root" in params and "width" in params
            assert "epochs" in params and "device" in params


def test_quick_preset_changes_only_knobs_left_at_their_defaults():
    for name in NAMES:
        defaults = {k: p["default"] for k, p in notebook_parameters(NOTEBOOKS / f"{name}.ipynb").items()}
        assert quick_preset(name, defaults) == PRESETS[name], name  # every preset knob exists and differs
    defaults = {k: p["default"] for k, p in notebook_parameters(NOTEBOOKS / "landscape_figures.ipynb").items()}
    chosen = {**defaults, "width": 0.5, "grid": "-1:1:21"}
    assert quick_preset("landscape_figures", chosen) == {k: v for k, v in PRESETS["landscape_figures"].items()
                                                         if k not in ("width", "grid")}
    with pytest.raises(ValueError, match="no quick preset"):
        quick_preset("no_such_notebook", {})


def lab_recipe() -> list[list[str]]:
    text = (ROOT / "Makefile").read_text()
    body = re.search(r"^lab:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    return [shlex.split(line.strip().lstrip("@")) for line in body.splitlines()]


def test_make_lab_registers_the_kernel_the_notebooks_name_and_opens_the_repository_root(tmp_path):
    import nbformat

    recipe = lab_recipe()
    install = next(cmd for cmd in recipe if cmd[1:4] == ["-m", "ipykernel", "install"])
    name, display = install[install.index("--name") + 1], install[install.index("--display-name") + 1]
    assert "--sys-prefix" in install  # the venv's own kernel list: no stale user-wide kernel wins
    for nb in NAMES:
        spec = nbformat.read(str(NOTEBOOKS / f"{nb}.ipynb"), as_version=4).metadata.kernelspec
        assert (spec.name, spec.display_name, spec.language) == (name, display, "python"), nb
    lab = next(cmd for cmd in recipe if cmd[0].endswith("jupyter") and cmd[1] == "lab")
    assert "--ServerApp.root_dir=." in lab and not any(a.startswith("notebooks") for a in lab[2:])
    # the same install into a scratch prefix: the kernel the notebooks name starts this interpreter
    prefix = tmp_path / "prefix"
    args = [a for a in install[1:] if a != "--sys-prefix"]
    subprocess.run([sys.executable, *args, "--prefix", str(prefix)], check=True, capture_output=True, timeout=120)
    probe = ("import json, sys; from jupyter_client.manager import KernelManager; km = KernelManager(kernel_name="
             "sys.argv[1]); print(json.dumps([km.kernel_spec.display_name, km.format_kernel_cmd()[0]]))")
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter")}
    out = subprocess.run([sys.executable, "-c", probe, name], check=True, capture_output=True, text=True, env=env,
                         timeout=120).stdout
    shown, executable = json.loads(out)
    assert shown == display and os.path.samefile(executable, sys.executable)


@pytest.mark.slow
def test_module_ablation(tmp_path):
    # the quick preset fills in what the test leaves at the defaults; what it sets stays
    result = run_notebook("module_ablation", tmp_path, quick=True, info_rcp=[True, False], elm_attention=True,
                          grid="-1:1:3", samples=32, steps_per_epoch=2)
    assert {k: result["parameters"][k] for k in ("width", "input_size", "epochs", "threads")} == {
        "width": 0.0625, "input_size": 8, "epochs": 1, "threads": 1}
    rows = result["rows"]
    assert [(r["info_rcp"], r["elm_attention"]) for r in rows] == [(True, True), (False, True)]
    assert all(top1_ok(r["top1"]) and math.isfinite(r["roughness"]) for r in rows)
    assert result["table"]["index"] == ["info_rcp", "elm_attention"]


@pytest.mark.slow
def test_augmentation_ablation(tmp_path):
    augs = ["standard", "mixup", "cutmix", "repeated", "randaugment", "randaugment+mixup"]
    result = run_notebook("augmentation_ablation", tmp_path, augmentations=augs, **{**TINY, "steps_per_epoch": 1})
    rows = result["rows"]
    assert [r["augmentation"] for r in rows] == augs
    assert all(top1_ok(r["top1"]) for r in rows) and rows[0]["delta_top1"] == 0.0


@pytest.mark.slow
def test_quantization_ablation(tmp_path):
    from bnext.quant import TABLE7_SPECS

    result = run_notebook("quantization_ablation", tmp_path, quick=True)  # the preset as a user runs it
    assert {k: result["parameters"][k] for k in PRESETS["quantization_ablation"]} == PRESETS["quantization_ablation"]
    rows = result["rows"]
    assert [r["spec"] for r in rows] == list(TABLE7_SPECS)
    assert all(top1_ok(r["top1"]) for r in rows)
    assert rows[0]["delta_top1"] == pytest.approx(0.0)  # 32/32 is the float model


@pytest.mark.slow
def test_distillation_ablation(tmp_path):
    result = run_notebook("distillation_ablation", tmp_path, teachers=["resnet18@0.0625", "bireal18@0.0625"],
                          **TINY)
    rows = result["rows"]
    assert [r["setting"] for r in rows] == ["none", "single_low_kc", "single_high_kc", "ensemble_mean",
                                            "ensemble_gap"]
    assert all(top1_ok(r["top1"]) for r in rows)
    assert rows[0]["teachers"] == "-" and " + " in rows[-1]["teachers"]
    teachers = result["teachers"]
    assert len(teachers) == 2 and teachers[0]["kc"] <= teachers[1]["kc"]
    table8 = result["table8"]
    assert len(table8) == 10
    assert all(abs(r["kc"] - r["paper_kc"]) <= 1.5e-3 for r in table8)


@pytest.mark.slow
def test_landscape_figures(tmp_path):
    result = run_notebook("landscape_figures", tmp_path, models=["resnet18", "bnext18"], grid="-1:1:3", samples=32,
                          **TINY)
    rows = result["rows"]
    assert [r["key"] for r in rows] == ["resnet18", "bnext18"]
    assert all(top1_ok(r["top1"]) and r["roughness"] is not None for r in rows)
    assert set(result["figures"]) == {"fig2", "fig6", "blocks"}  # blocks: per-block curvature (docs/objectives.md)
    run_dir = tmp_path / "runs" / "landscape_figures"
    assert (run_dir / "bnext18" / "landscape_train_loss_3d.html").stat().st_size > 100_000  # plotly.js inlined


@pytest.mark.slow
def test_explore(tmp_path):
    # quick: the notebook trains two tiny models and computes their surfaces itself (a fresh clone has no runs/)
    result = run_notebook("explore", tmp_path, quick=True, axis="y", at=0.5)
    rows = result["rows"]
    assert [Path(r["surface"]).parent.name for r in rows] == ["resnet18", "bnext18"]
    assert all(math.isfinite(r["loss_centre"]) for r in rows)
    run_dir = tmp_path / "runs" / "explore"
    assert (run_dir / "surface_3d.html").is_file()
    # the rotating figure survives execution and nbconvert: plotly.js inlined once, the figure drawn from it
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_filename(str(run_dir / "explore.ipynb"))
    assert len(re.findall(r"\* plotly\.js v\d", html)) == 1
    assert html.count('class="plotly-graph-div"') == 1 and "Plotly.newPlot(" in html
    assert not re.search(r"<script[^>]+src=[\"'][^\"']*plotly", html)  # nothing fetched from a CDN
