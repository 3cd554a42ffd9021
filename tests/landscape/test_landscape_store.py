"""The surface HDF5 schema: creation, reuse rules, validation errors."""

import h5py
import numpy as np
import pytest

from landscape import store
from landscape.store import SettingsMismatchError, SurfaceFileError, SurfaceWriter, read_surface

X = np.linspace(-1, 1, 3)
Y = np.linspace(0, 2, 5)
DIRS = {"x": {"w": np.ones((2, 3), np.float32)}, "y": {"w": np.zeros((2, 3), np.float32)}}


def _open(path, mode="resume", settings=None, y=Y):
    return SurfaceWriter.open(
        path,
        settings=settings or {"seed": 1, "model": {"name": "m"}},
        xcoordinates=X,
        ycoordinates=y,
        directions=DIRS,
        mode=mode,
    )


def test_create_layout_and_roundtrip(tmp_path):
    path = tmp_path / "s.h5"
    with _open(path) as w:
        assert w.pending() == [(i, j) for i in range(3) for j in range(5)]
        w.write([((1, 4), {"train_loss": 0.0, "train_acc": 50.0})])
    s = read_surface(path)
    assert s.shape == (3, 5) and s.ndim == 2
    assert s.values["train_loss"][1, 4] == 0.0 and s.done[1, 4]
    assert np.isnan(s.values["train_loss"][0, 0]) and np.isnan(s.values["test_loss"]).all()
    assert s.attrs["format"] == store.FORMAT and s.attrs["format_version"] == store.FORMAT_VERSION
    assert s.settings["seed"] == 1 and s.attrs["seed"] == 1
    with h5py.File(path) as f:
        assert list(f["directions/x"].keys()) == ["w"]
        assert f["train_loss"].shape == (3, 5)
    # a genuine loss of 0 is stored and not recomputed (the reference tool used loss <= 0 as "missing")
    with _open(path) as w:
        assert (1, 4) not in w.pending() and len(w.pending()) == 14
    dirs = store.read_directions(path)
    np.testing.assert_array_equal(dirs["x"]["w"], DIRS["x"]["w"])


def test_one_dimensional(tmp_path):
    path = tmp_path / "line.h5"
    with _open(path, y=None) as w:
        w.write([((2,), {"test_loss": 1.5, "test_acc": 10.0})])
    s = read_surface(path)
    assert s.ndim == 1 and s.ycoordinates is None and s.values["test_loss"][2] == 1.5


def test_settings_mismatch_refuses_then_overwrite_or_new(tmp_path):
    path = tmp_path / "s.h5"
    with _open(path) as w:
        w.write([((0, 0), {"train_loss": 1.0})])
    with pytest.raises(SettingsMismatchError, match=r"seed: file has 1, requested 2"):
        _open(path, settings={"seed": 2, "model": {"name": "m"}})
    # volatile entries (checkpoint path) do not count
    _open(path, settings={"seed": 1, "model": {"name": "m"}, "checkpoint_path": "/moved.pt"}).close()
    with _open(path, mode="new", settings={"seed": 2}) as w:
        assert w.path.name == "s-1.h5"
    assert read_surface(path).done.sum() == 1
    with _open(path, mode="overwrite", settings={"seed": 2}) as w:
        assert len(w.pending()) == 15
    assert read_surface(path).settings["seed"] == 2


def test_clear_errors_for_bad_files(tmp_path):
    with pytest.raises(SurfaceFileError, match="no such file"):
        read_surface(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(SurfaceFileError, match="not an HDF5 file"):
        read_surface(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["xcoordinates"] = X
        f["train_loss"] = np.zeros((3, 5))
    with pytest.raises(SurfaceFileError, match="reference tool"):
        read_surface(foreign)
    good = tmp_path / "good.h5"
    _open(good).close()
    data = good.read_bytes()
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SurfaceFileError, match="damaged or truncated"):
        read_surface(truncated)
    with pytest.raises(SurfaceFileError, match="damaged or truncated"):
        _open(truncated)
    _open(truncated, mode="overwrite").close()  # explicitly asked: replaced
    assert read_surface(truncated).shape == (3, 5)
    with h5py.File(good, "r+") as f:
        del f["done"]
    with pytest.raises(SurfaceFileError, match="'done' is missing"):
        read_surface(good)


def test_metrics_written_as_attributes(tmp_path):
    path = tmp_path / "s.h5"
    _open(path).close()
    store.write_metrics(path, "train_loss", {"roughness": 0.25, "basin_truncated": True})
    assert read_surface(path).metrics["train_loss"] == {"roughness": 0.25, "basin_truncated": True}
