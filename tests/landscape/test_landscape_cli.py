"""The CLI (the bnext glue) and the package's independence from bnext."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from landscape.__main__ import main
from landscape.store import read_surface

ROOT = Path(__file__).resolve().parents[2]


def test_library_does_not_import_bnext():
    for path in (ROOT / "landscape").glob("*.py"):
        if path.name != "__main__.py":
            text = path.read_text()
            assert "import bnext" not in text and "from bnext" not in text, path
    code = (
        "import sys, landscape, landscape.store, landscape.directions, landscape.surface, landscape.metrics, "
        "landscape.figures.plot; assert not [m for m in sys.modules if m.startswith('bnext')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.fixture
def checkpoint(tmp_path):
    models = pytest.importorskip("bnext.models")
    pytest.importorskip("bnext.data")
    import torch

    torch.manual_seed(0)
    model = models.create("bnext18", num_classes=10, input_size=32, width=0.25)
    return models.save(model, tmp_path / "run" / "checkpoints" / "best.pt")


@pytest.mark.slow
def test_compute_plot_compare(checkpoint, tmp_path, capsys):
    out = tmp_path / "surf.h5"
    argv = [
        "compute",
        "--checkpoint",
        str(checkpoint),
        "--x",
        "-1:1:3",
        "--y",
        "-0.5:0.5:2",
        "--subset",
        "16",
        "--splits",
        "train,test",
        "--out",
        str(out),
        "--no-progress",
        "--forward",
        "torch",
        "--export-directions",
        str(tmp_path / "ref_dirs.h5"),
    ]
    assert main(argv) == 0
    s = read_surface(out)
    assert s.complete and s.shape == (3, 2) and np.isfinite(s.values["test_acc"]).all()
    assert s.settings["model"]["name"] == "bnext18" and s.settings["model"]["options"]["width"] == 0.25
    assert len(s.settings["checkpoint_sha256"]) == 64 and s.settings["data"]["name"] == "digits"
    assert s.settings["subset_size"] == 16 and s.settings["normalization"] == "filter"
    assert main(argv) == 0  # same settings: resumed, nothing to do
    capsys.readouterr()
    assert main([*argv, "--seed", "3"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # the exported reference-layout directions are the same directions
    import bnext.models
    from landscape.directions import directions_from_arrays, read_reference
    from landscape.store import read_directions

    ref = read_reference(tmp_path / "ref_dirs.h5", bnext.models.load(checkpoint))
    assert ref.fingerprint() == directions_from_arrays(read_directions(out)).fingerprint()
    assert main(["plot", str(out)]) == 0
    for suffix in ("_train_loss_contour.png", "_train_loss_3d.png", "_train_loss_3d.html", "_train_loss.vts",
                   "_train_loss_heatmap.png", "_1d.png"):
        assert (tmp_path / f"surf{suffix}").exists(), suffix
    before = (tmp_path / "surf_train_loss_contour.png").read_bytes()
    assert main(["plot", str(out), "--key", "test_loss", "--kinds", "contour", "--width", "3.5"]) == 0
    assert (tmp_path / "surf_test_loss_contour.png").exists()  # another key, another file:
    assert (tmp_path / "surf_train_loss_contour.png").read_bytes() == before  # the train figure is kept
    panel = tmp_path / "cmp.png"
    assert main(["compare", str(out), str(out), "--labels", "A", "B", "--out", str(panel)]) == 0
    assert panel.exists() and "| A |" in panel.with_suffix(".md").read_text()


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "x.h5"
    bad.write_text("not hdf5")
    assert main(["plot", str(bad)]) == 2
    assert "not an HDF5 file" in capsys.readouterr().err
    assert main(["compute", "--model", "resnet18", "--x", "1:2"]) == 2  # bad grid spec fails before any work
    assert "min:max:num" in capsys.readouterr().err
