"""The surface HDF5 schema: creation, reuse rules, validation errors."""

import h5py
import numpy as np
import pytest

from landscape import store
from landscape.grid import coarse_to_fine
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
        assert w.pending() == coarse_to_fine((3, 5)) and w.shape == (3, 5)
        w.write([((1, 4), {"train_loss": 0.0, "train_acc": 50.0})])
    s = read_surface(path)
    assert s.shape == (3, 5) and s.ndim == 2
    assert s.values["train_loss"][1, 4] == 0.0 and s.done[1, 4]
    assert np.isnan(s.values["train_loss"][0, 0]) and np.isnan(s.values["test_loss"]).all()
    assert s.attrs["format"] == store.FORMAT and s.attrs["format_version"] == store.FORMAT_VERSION
    assert s.settings["seed"] == 1 and s.attrs["seed"] == 1
    with h5py.File(path) as f:  # on disk: (ny, nx), Z[j, i] = f(x[i], y[j])
        assert list(f["directions/x"].keys()) == ["w"]
        assert f["train_loss"].shape == (5, 3) and f["train_loss"][4, 1] == 0.0 and f["done"][4, 1] == 1
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


def _as_version_1(path):
    """Rewrite a version-2 file in the version-1 layout ([i, j], shape (nx, ny))."""
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 1
        for name in (*store.VALUE_NAMES, "done"):
            data = f[name][()].T
            del f[name]
            f.create_dataset(name, data=data)


def test_version_1_files_read_and_resume_in_their_layout(tmp_path):
    path = tmp_path / "v1.h5"
    with _open(path) as w:
        w.write([((2, 1), {"train_loss": 7.0})])
    _as_version_1(path)
    with h5py.File(path) as f:
        assert f["train_loss"].shape == (3, 5) and f["train_loss"][2, 1] == 7.0
    s = read_surface(path)
    assert s.values["train_loss"][2, 1] == 7.0 and s.done[2, 1] and s.done.sum() == 1
    with _open(path) as w:  # resuming keeps the file's own layout
        assert (2, 1) not in w.pending() and len(w.pending()) == 14
        w.write([((0, 3), {"train_loss": 5.0})])
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 1 and f["train_loss"][0, 3] == 5.0
    assert read_surface(path).values["train_loss"][0, 3] == 5.0
    # settings added since (BN mode) compare equal to the value older files were computed with
    old = {"seed": 1, "bn_recalibrate": False}
    assert store.settings_difference(old, {**old, "bn": "interpolate", "bn_calibration": None}) == {}
    assert set(store.settings_difference(old, {**old, "bn": "recalibrate"})) == {"bn"}


def test_nonfinite_points_counted(tmp_path):
    path = tmp_path / "s.h5"
    with _open(path) as w:
        w.write([((0, 0), {"train_loss": float("nan"), "train_acc": 10.0}), ((1, 1), {"train_loss": 1.0})])
        w.write([((2, 2), {"train_loss": float("inf")})])
    assert read_surface(path).attrs["nonfinite_points"] == 2
