"""Every writer of a surface file fails cleanly and never shares the file (issue 24).

* One writer per file with HDF5's own locking off (``HDF5_USE_FILE_LOCKING=FALSE``, as on NFS and
  Lustre): while a real ``compute`` process writes a surface, a second process trying plot's metrics,
  a merge into the same file, another compute or any ``update_surface`` writer is refused, and the
  surface comes out complete; likewise while a metrics writer holds the file.
* Disk full: ``landscape compute`` and ``landscape merge`` on a real 200 KiB tmpfs (when root, as in
  CI) exit 2 with one line naming the file and the cause, no segfault, no temporary, the previous file
  intact; injected OS and HDF5 write errors give the same.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from landscape.__main__ import main
from landscape.directions import random_directions
from landscape.lock import SurfaceLock
from landscape.store import SurfaceWriteError, SurfaceWriter, read_surface, update_surface, write_metrics
from landscape.surface import compute_surface
from tests._tmpfs import small_tmpfs

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

HOLD_COMPUTE = """
import sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from _models import make_data, make_model
from landscape.directions import random_directions
from landscape.surface import compute_surface
out, release = sys.argv[1], Path(sys.argv[2])
model = make_model("cnn")
def hold(m):
    print("point", flush=True)
    while not release.exists():
        time.sleep(0.02)
    return m
compute_surface(out, model, random_directions(model, seed=0), {{"train": make_data(16, seed=1)}}, "-1:1:3", "-1:1:2",
                forward_factory=hold, progress=False)
print("finished", flush=True)
"""

HOLD_METRICS = """
import sys, time
from pathlib import Path
from landscape.store import update_surface
with update_surface(sys.argv[1]) as f:
    print("point", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.02)
    f.require_group("metrics").require_group("train_loss").attrs["held"] = 1
print("finished", flush=True)
"""

ATTEMPTS = """
import json, sys
sys.path.insert(0, {here!r})
from landscape.lock import SurfaceLockedError
from landscape.merge import merge_parts
from landscape.store import update_surface, write_metrics
out, part = sys.argv[1], sys.argv[2]
def compute():
    from _models import make_data, make_model
    from landscape.directions import random_directions
    from landscape.surface import compute_surface
    m = make_model("cnn")
    compute_surface(out, m, random_directions(m, ndim=1, seed=5), {{"train": make_data(8, seed=3)}}, "0:1:2",
                    mode="overwrite", progress=False)
def update():
    with update_surface(out) as f:
        f.attrs["intruder"] = 1
attempts = {{"metrics": lambda: write_metrics(out, "train_loss", {{"roughness": 1.0}}),
            "merge": lambda: merge_parts([part], out, overwrite=True), "update": update}}
if sys.argv[3] == "all":
    attempts["compute"] = compute
result = {{}}
for name, fn in attempts.items():
    try:
        fn()
        result[name] = "wrote"
    except SurfaceLockedError as exc:
        result[name] = "locked" if "in use by another process" in str(exc) else str(exc)
print(json.dumps(result), flush=True)
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HDF5_USE_FILE_LOCKING="FALSE")


def _python(code: str, *args: object, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code).format(here=str(HERE)), *map(str, args)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def part(tmp_path, cnn, data):
    path = tmp_path / "other.h5"
    compute_surface(path, cnn, random_directions(cnn, ndim=1, seed=1), data, "-1:1:3", progress=False)
    return path


@pytest.mark.parametrize("holder", [pytest.param("compute", marks=pytest.mark.slow), "metrics"])
def test_every_writer_is_refused_while_another_writes_with_hdf5_locking_off(tmp_path, cnn, data, part, holder):
    out, release = tmp_path / "s.h5", tmp_path / "release"
    if holder == "metrics":  # a finished surface, held by plot's metrics writer
        compute_surface(out, cnn, random_directions(cnn, seed=0), data, "-1:1:3", "-1:1:2", progress=False)
    proc = _python(HOLD_COMPUTE if holder == "compute" else HOLD_METRICS, out, release)
    try:
        assert proc.stdout.readline().strip() == "point", proc.stderr.read()  # the holder is writing now
        attempt = _python(ATTEMPTS, out, part, "all" if holder == "compute" else "light")
        stdout, stderr = attempt.communicate(timeout=120)
        results = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else stderr
        expected = ("metrics", "merge", "update", *(("compute",) if holder == "compute" else ()))
        assert results == {k: "locked" for k in expected}, results
    finally:
        release.touch()
        rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "finished" in rest, err
    s = read_surface(out)  # intact, complete, and nobody else's writes in it
    assert s.complete and s.shape == (3, 2) and "intruder" not in s.attrs
    assert np.isfinite(s.values["train_loss"]).all()
    write_metrics(out, "train_loss", {"roughness": 0.5})  # the holder is gone: the file is writable again
    assert read_surface(out).metrics["train_loss"] == {"roughness": 0.5}


# ----------------------------------------------------------------------------- disk full
BIG_MODEL = """
import torch
from torch import nn


def build():  # 0.5 MB of directions: more than the 200 KiB disk holds
    return nn.Sequential(nn.Linear(3, 20000), nn.Linear(20000, 3))


def small():
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 3))


def data():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    return x, x.argmax(1)
"""


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 200 KiB tmpfs (root only: skipped elsewhere)."""
    with small_tmpfs(tmp_path / "disk") as disk:
        yield disk


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "landscape", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300)


def _fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 1024)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _one_line_disk_full(proc: subprocess.CompletedProcess, path: Path) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"cannot write {path}: no space left on device (errno 28)" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_compute_and_merge_on_a_full_disk_fail_in_one_line(tmp_path, tiny_disk):
    (tmp_path / "big.py").write_text(textwrap.dedent(BIG_MODEL))
    common = ("--data", "big.py:data", "--x=-1:1:3", "--no-progress")
    out = tiny_disk / "s.h5"
    _one_line_disk_full(_cli("compute", "--model", "big.py:build", *common, "--out", out, cwd=tmp_path), out)
    assert not list(tiny_disk.iterdir())  # no surface, no temporary, no lock file

    parts = [tmp_path / f"p.part-{i}-of-2.h5" for i in (1, 2)]
    for i in (1, 2):
        assert main(["compute", "--model", str(tmp_path / "big.py:build"), "--data", str(tmp_path / "big.py:data"),
                     "--x=-1:1:3", "--no-progress", "--shard", f"{i}/2", "--out", str(tmp_path / "p.h5")]) == 0
    whole = tiny_disk / "whole.h5"
    _one_line_disk_full(_cli("merge", *parts, "--out", whole, cwd=tmp_path), whole)
    assert not list(tiny_disk.iterdir())

    # a small surface fits; the disk is then filled: --overwrite keeps the previous file byte for byte
    small = tiny_disk / "small.h5"
    assert _cli("compute", "--model", "big.py:small", *common, "--out", small, cwd=tmp_path).returncode == 0
    before = small.read_bytes()
    _fill(tiny_disk)
    proc = _cli("compute", "--model", "big.py:small", *common, "--init-seed", "3", "--overwrite", "--out", small,
                cwd=tmp_path)
    _one_line_disk_full(proc, small)
    assert small.read_bytes() == before and sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "small.h5"]


def test_injected_write_errors_end_in_one_line_and_keep_the_file(tmp_path, cnn, data, monkeypatch, capsys):
    import landscape.store as store

    path = tmp_path / "s.h5"
    compute_surface(path, cnn, random_directions(cnn, ndim=1, seed=0), data, "-1:1:3", progress=False)
    before = path.read_bytes()

    def refuse(fd, data):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(store.os, "write", refuse)
    with pytest.raises(SurfaceWriteError, match=rf"cannot write {path}: read-only file system \(errno 30\)"):
        compute_surface(path, cnn, random_directions(cnn, ndim=1, seed=1), data, "-1:1:3", progress=False,
                        mode="overwrite")
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]

    # HDF5 failing in the middle of a metrics write (its text carries the errno): one line, file closed, lock free
    def h5_full(*a, **k):
        raise RuntimeError("Can't write data (file write failed: time = now, filename = 's.h5', errno = 28, "
                           "error message = 'No space left on device')")

    with pytest.raises(SurfaceWriteError, match=r"no space left on device \(errno 28\); nothing stored before"):
        with update_surface(path) as f:
            monkeypatch.setattr(type(f), "flush", h5_full)
    monkeypatch.undo()
    SurfaceLock(path).acquire().release()
    assert read_surface(path).complete


def test_update_surface_waits_for_a_short_holder(tmp_path, cnn, data):
    path = tmp_path / "s.h5"
    compute_surface(path, cnn, random_directions(cnn, ndim=1, seed=0), data, "-1:1:3", progress=False)
    release = tmp_path / "release"
    proc = _python(HOLD_METRICS, path, release)
    try:
        assert proc.stdout.readline().strip() == "point"
        t0 = time.monotonic()
        code = f"import time, pathlib; time.sleep(1.0); pathlib.Path({str(release)!r}).touch()"
        subprocess.Popen([sys.executable, "-c", code])
        write_metrics(path, "test_loss", {"roughness": 2.0}, wait=60)
        assert time.monotonic() - t0 > 0.5
    finally:
        release.touch()
        proc.communicate(timeout=60)
    s = read_surface(path)
    assert s.metrics["test_loss"] == {"roughness": 2.0} and s.metrics["train_loss"] == {"held": 1}


def test_a_file_system_without_flock_is_one_line(tmp_path, monkeypatch, cnn, data):
    import landscape.lock as lock

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(lock.fcntl, "flock", no_flock)
    with pytest.raises(OSError, match=r"cannot lock .*s.h5: the file system refuses flock \(Function not "
                                      r"implemented\); on Lustre mount with -o flock"):
        compute_surface(tmp_path / "s.h5", cnn, random_directions(cnn, ndim=1, seed=0), data, "-1:1:3",
                        progress=False)
    assert not (tmp_path / "s.h5").exists()


def test_metadata_writes_on_a_full_disk_are_refused_before_the_file_is_touched(tiny_disk, cnn, data):
    path = tiny_disk / "s.h5"
    directions = random_directions(cnn, ndim=1, seed=0)
    compute_surface(path, cnn, directions, data, "-1:1:3", progress=False)
    before = path.read_bytes()
    _fill(tiny_disk)
    # HDF5 failing halfway through adding attributes left the whole file unreadable: refused up front now
    with pytest.raises(SurfaceWriteError, match=r"cannot write .*s.h5: no space left on device \(errno 28\); "
                                                r"nothing stored before is lost \(\d+ bytes free"):
        write_metrics(path, "train_loss", {f"k{i}": "x" * 2000 for i in range(50)})
    writer = SurfaceWriter.open(path, settings=read_surface(path).settings, xcoordinates=np.linspace(-1, 1, 3),
                                ycoordinates=None, directions={}, mode="resume")
    with pytest.raises(SurfaceWriteError, match="no space left on device"):  # as a resumed compute storing 'engine'
        writer.set_attribute("engine", {"forward": "torch", "note": "y" * 5000})
    writer.close()
    assert path.read_bytes() == before and read_surface(path).complete
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "s.h5"]


def test_plot_draws_while_another_process_writes_the_file_and_says_metrics_were_not_stored(tmp_path, cnn, data,
                                                                                           capsys):
    path = tmp_path / "s.h5"
    compute_surface(path, cnn, random_directions(cnn, seed=0), data, "-1:1:3", "-1:1:3", progress=False)
    release = tmp_path / "release"
    proc = _python(HOLD_METRICS, path, release)  # another process holds the file for writing
    try:
        assert proc.stdout.readline().strip() == "point"
        rc = main(["plot", str(path), "--kinds", "contour", "--format", "png", "--out-dir", str(tmp_path / "fig")])
    finally:
        release.touch()
        proc.communicate(timeout=60)
    err = capsys.readouterr().err
    assert rc == 0 and "note: metrics not stored:" in err and "is in use by another process" in err, err
    assert list((tmp_path / "fig").glob("*contour*.png"))
    assert "roughness" not in read_surface(path).metrics.get("train_loss", {})  # nothing written past the lock
