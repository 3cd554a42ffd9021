"""``python -m bnext.demo --quick``: all seven Fig. 2 models, their surfaces, figures and table; then reuse."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bnext.ablate.figures import FIG2_MODELS

KEYS = [v.key for v in FIG2_MODELS]


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "bnext.demo", "--quick", "--no-progress", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def png_ok(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 2000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_demo_quick_outputs_and_reuse(tmp_path):
    from landscape.store import read_surface

    out = tmp_path / "demo"
    proc = run_demo("--out", str(out), cwd=tmp_path)
    text = proc.stdout
    assert "fig2_contours.png" in text and "total wall time" in text
    for v in FIG2_MODELS:
        assert v.label in text  # the printed table has every model

    assert png_ok(out / "fig2_contours.png") and png_ok(out / "fig6_surfaces.png")
    for key in KEYS:
        d = out / key
        assert png_ok(d / "landscape_train_loss_3d.png") and png_ok(d / "landscape_train_loss_contour.png")
        html = (d / "landscape_train_loss_3d.html").read_text()
        assert "<html" in html and "plotly" in html and len(html) > 100_000  # plotly.js inlined: opens offline
        surface = read_surface(d / "landscape.h5")
        assert surface.complete and surface.shape == (5, 5)
        assert surface.settings["normalization"] == "filter" and surface.settings["ignore"] == "ignore"
        assert (d / "checkpoints" / "best.pt").is_file()

    with open(out / "table.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["key"] for r in rows] == KEYS
    for r in rows:
        assert 0.0 <= float(r["top1"]) <= 100.0
        assert float(r["roughness"]) >= 0.0 and 0.0 <= float(r["convexity_share"]) <= 1.0
        # curvature columns: top Hessian eigenvalue (Lanczos), trace (Hutchinson) and their time
        assert float(r["top_eig"]) != 0.0 and float(r["trace_stderr"]) >= 0.0 and float(r["hessian_seconds"]) > 0
        assert json.loads((out / r["key"] / "hessian_demo.json").read_text())["curvature"]["top_eig"] == float(
            r["top_eig"])
    md = (out / "table.md").read_text()
    assert md.count("\n") == 2 + len(KEYS) and "roughness" in md and "top_eig" in md
    timings = json.loads((out / "timings.json").read_text())
    assert timings["wall_seconds"] > 0 and "train bnext18" in timings["stages"]

    # a rerun reuses the trained model and the finished surface
    ckpt = out / "resnet18" / "checkpoints" / "best.pt"
    stamp = ckpt.stat().st_mtime_ns
    again = run_demo("--out", str(out), "--models", "resnet18", "--jobs", "1", cwd=tmp_path)
    assert "1 of 1 trained models reused" in again.stdout
    assert ckpt.stat().st_mtime_ns == stamp
    assert read_surface(out / "resnet18" / "landscape.h5").complete
    assert "hessian resnet18" not in json.loads((out / "timings.json").read_text())["stages"]  # curvature reused


def test_demo_rejects_unknown_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bnext.demo", "--quick", "--models", "nope", "--out",
                           str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown model key" in proc.stderr
