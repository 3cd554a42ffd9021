"""One writer per surface file, HDF5's lock reported as 'in use', refused grids, stale temporaries."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from landscape.__main__ import main
from landscape.directions import random_directions
from landscape.grid import GridTooLargeError, check_grid_memory, parse_grid
from landscape.lock import SurfaceLock, SurfaceLockedError
from landscape.store import SurfaceFileError, SurfaceWriter, read_surface
from landscape.surface import compute_surface

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("_compute_script.py")


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _small_surface(path, cnn, data):
    return compute_surface(path, cnn, random_directions(cnn, ndim=1, seed=0), data, "-1:1:3", progress=False)


def test_degenerate_grids_are_refused(capsys):
    with pytest.raises(ValueError, match=r"min == max \(1.0\) would evaluate the same point 3 times"):
        parse_grid("1:1:3")
    assert parse_grid("1:1:1").tolist() == [1.0]
    rc = main(["compute", "--model", "resnet18", "--x", "1:1:3"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "would evaluate the same point 3 times" in err


def test_grids_that_do_not_fit_in_memory_are_refused(tmp_path, cnn, data):
    with pytest.raises(GridTooLargeError, match=r"a 1000 x 1000 grid \(1,000,000 points\) needs about 0.1 GiB "
                                                r"of memory for its arrays; 0.0 GiB are available"):
        check_grid_memory((1000, 1000), available=1000)
    directions = random_directions(cnn, ndim=2, seed=0)
    with pytest.raises(GridTooLargeError, match=r"a 200000 x 200000 grid \(40,000,000,000 points\) needs about "
                                                r"5,960.5 GiB"):
        compute_surface(tmp_path / "huge.h5", cnn, directions, data, "-1:1:200000", "-1:1:200000", progress=False)
    assert not (tmp_path / "huge.h5").exists()


@pytest.mark.slow
def test_cli_refuses_a_grid_that_does_not_fit(tmp_path, capsys):
    rc = main(["compute", "--model", "resnet18", "--model-option", "width=0.125", "--subset", "8", "--x=-1:1:200000",
               "--y=-1:1:200000", "--out", str(tmp_path / "cli.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and "GiB of memory" in err and "Traceback" not in err


def test_second_writer_stops_at_once_naming_the_pid(tmp_path, cnn, data):
    path = tmp_path / "s.h5"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from landscape.lock import SurfaceLock
        with SurfaceLock({str(path)!r}):
            print("locked", flush=True)
            time.sleep(60)
        """)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for mode in ("resume", "overwrite", "new"):
            with pytest.raises(SurfaceLockedError, match=rf"s.h5 is in use by another process \(PID {holder.pid} "
                                                         "on "):
                _small_surface(path, cnn, data) if mode == "resume" else compute_surface(
                    path, cnn, random_directions(cnn, ndim=1, seed=0), data, "-1:1:3", progress=False, mode=mode)
        assert not path.exists()
    finally:
        holder.kill()
        holder.wait()
    assert read_surface(_small_surface(path, cnn, data)).complete  # the lock died with its holder


def test_lock_is_released_on_close_and_on_failure(tmp_path, cnn, data):
    path = _small_surface(tmp_path / "s.h5", cnn, data)
    assert not (tmp_path / ".s.h5.lock").exists()
    with pytest.raises(ValueError):  # settings differ: refused, lock released
        compute_surface(path, cnn, random_directions(cnn, ndim=1, seed=1), data, "-1:1:3", progress=False)
    with SurfaceLock(path):
        pass


@pytest.mark.slow
def test_hdf5_lock_refusal_says_in_use_not_damaged(tmp_path, cnn, data):
    path = _small_surface(tmp_path / "s.h5", cnn, data)
    reader = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time, h5py
        f = h5py.File({str(path)!r}, "r+")
        print("open", flush=True)
        time.sleep(60)
        """)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(SurfaceFileError) as e:
            read_surface(path)
        msg = str(e.value)
        assert "is in use by another process" in msg and "delete it" not in msg and "overwrite" not in msg
        with pytest.raises(SurfaceFileError, match="in use by another process"):
            _small_surface(path, cnn, data)
    finally:
        reader.kill()
        reader.wait()
    assert read_surface(path).complete


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, cnn, data):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    stale = tmp_path / f".s.h5.{dead}.tmp"
    alive = tmp_path / f".s.h5.{os.getppid()}.tmp"
    other = tmp_path / f".other.h5.{dead}.tmp"
    for p in (stale, alive, other):
        p.write_bytes(b"half an HDF5 file")
    _small_surface(tmp_path / "s.h5", cnn, data)
    assert not stale.exists() and alive.exists() and other.exists()
    assert np.isfinite(read_surface(tmp_path / "s.h5").values["train_loss"]).all()


def test_writer_keeps_the_file_locked_until_close(tmp_path, cnn, data):
    path = _small_surface(tmp_path / "s.h5", cnn, data)
    s = read_surface(path)
    directions = {"x": {k: np.zeros(1, np.float32) for k in ["a"]}}
    w = SurfaceWriter.open(tmp_path / "w.h5", settings=s.settings, xcoordinates=s.xcoordinates, ycoordinates=None,
                           directions=directions)
    code = (f"from landscape.lock import SurfaceLock, SurfaceLockedError\ntry:\n"
            f"    SurfaceLock({str(tmp_path / 'w.h5')!r}).acquire()\nexcept SurfaceLockedError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert f"in use by another process (PID {os.getpid()} on" in r.stdout
    w.close()
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
    assert r.stdout == "" and r.returncode == 0
