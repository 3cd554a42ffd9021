"""The surface HDF5 schema, in one place: create, resume, write points, read and validate.

Layout of a surface file (format ``landscape-surface``, version :data:`FORMAT_VERSION`)::

    /                         attrs: format="landscape-surface", format_version=2, ndim (1|2),
                                     settings (JSON, compared on reuse), one attribute per
                                     setting (model, checkpoint_path, checkpoint_sha256, data,
                                     subset_size, seed, normalization, ignore, ...),
                                     package_version, created, nonfinite_points
    /xcoordinates             (nx,)  float64
    /ycoordinates             (ny,)  float64            (2D surfaces only)
    /train_loss /train_acc    (nx,) or (ny, nx) float64, NaN where not (yet) computed
    /test_loss  /test_acc     same
    /<split>_<metric>         same, for the metrics named in the setting ``objective_values``
    /done                     (nx,) or (ny, nx) uint8, 1 where every requested split is stored
    /directions/x/<param>     float32, the x direction keyed by parameter (or buffer) name
    /directions/y/<param>     float32 (2D surfaces only)
    /trajectory/xcoordinates  optional projected training trajectory (PCA directions)
    /metrics/<value name>     optional, attrs written by :mod:`landscape.metrics`

Orientation on disk (version 2): a 2D dataset has shape ``(ny, nx)`` and ``train_loss[j, i]`` is
the value at ``(xcoordinates[i], ycoordinates[j])``: the reading convention of Li et al.'s
``plot_2D.py``/``h52vtp`` and of matplotlib's ``contour(X, Y, Z)`` with ``X, Y = np.meshgrid(x, y)``.
Version-1 files stored ``[i, j]`` (shape ``(nx, ny)``); they are still read (and resumed in their
own layout). In memory (:class:`Surface`, :meth:`SurfaceWriter.write` indices) the API is always
``values[k][i, j]`` = value at ``(x[i], y[j])``: the transpose happens at the file boundary only.

Unlike the reference tool (which marks missing entries with -1 and so recomputes a genuine loss
of 0 forever), missing entries are NaN and the ``done`` mask says what is stored. All datasets are
allocated contiguously when the file is created (written to a temporary name, then renamed), so
later writes only touch raw data: values are written and flushed before the ``done`` flag is set
and flushed, and a process killed at any moment loses at most the points in flight.

One writer per file, whatever the file system: every process that writes into a surface file
(:class:`SurfaceWriter` for compute and merge, :func:`write_metrics` for plot, :func:`update_surface`
for eigenvalue maps and other additions) holds the workbench's own :class:`landscape.lock.SurfaceLock`
while the file is open for writing, so nothing depends on HDF5's file locking (usually off on
NFS and Lustre, ``HDF5_USE_FILE_LOCKING=FALSE``); readers open the file read-only. A new file is
built in memory and written to a temporary name with plain OS writes, so a full or read-only disk
ends in :class:`SurfaceWriteError` (one line naming the file and the cause), the previous file intact
and no temporary left.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .diskwrite import (
    METADATA_RESERVE,
    SurfaceWriteError,
    close_quietly,
    describe_write_error,
    require_free,
    write_atomic,
)
from .grid import check_grid_memory
from .lock import SurfaceLock, remove_stale_temporaries

FORMAT = "landscape-surface"
FORMAT_VERSION = 2
VALUE_NAMES = ("train_loss", "train_acc", "test_loss", "test_acc")
SPLITS = ("train", "test")
# The setting listing value datasets beyond VALUE_NAMES (``train_top5``, ...: landscape.objectives metrics)
EXTRA_VALUES = "objective_values"
# Settings that do not change the values on the grid and are therefore not compared on reuse.
# The forward (torch or an exact packed engine) and the free-text note do not either.
VOLATILE_SETTINGS = frozenset({"checkpoint_path", "package_version", "created", "note", "forward"})
# Settings added later, with the value that files written before them were computed with.
LEGACY_DEFAULTS = {"bn": "interpolate", "bn_calibration": None, "loss": "ce", "metrics": [], EXTRA_VALUES: []}


class SurfaceFileError(ValueError):
    """A file is missing, truncated, foreign, or does not follow the surface schema."""


class SettingsMismatchError(ValueError):
    """An existing surface file was made with different settings than the ones requested."""


def package_version() -> str:
    """Version of the installed workbench (``unknown`` when not installed)."""
    try:
        from importlib.metadata import version

        return version("bnext-workbench")
    except Exception:  # noqa: BLE001 - metadata lookup must never break a run
        return "unknown"


def _jsonable(value: Any) -> Any:
    """Plain JSON types for settings (numpy scalars, tuples and paths converted)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _attr_value(value: Any) -> Any:
    """An HDF5-storable attribute: scalars stay, everything else becomes JSON text."""
    if isinstance(value, bool | int | float | str) and not isinstance(value, np.generic):
        return value
    return json.dumps(_jsonable(value), sort_keys=True)


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _decode_json(value: Any) -> Any:
    """Attributes stored as JSON text (lists, dicts) decoded; other values unchanged."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def settings_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two settings dicts, ignoring :data:`VOLATILE_SETTINGS`."""
    old_j, new_j = _jsonable(old), _jsonable(new)
    for k, v in LEGACY_DEFAULTS.items():  # files written before a setting existed computed with its default
        for side in (old_j, new_j):
            side.setdefault(k, v)
    keys = (set(old_j) | set(new_j)) - VOLATILE_SETTINGS
    return {k: (old_j.get(k), new_j.get(k)) for k in sorted(keys) if old_j.get(k) != new_j.get(k)}


@dataclass
class Surface:
    """A surface read back from a file (values as numpy arrays, attrs decoded)."""

    path: Path
    xcoordinates: np.ndarray
    ycoordinates: np.ndarray | None
    values: dict[str, np.ndarray]
    done: np.ndarray
    settings: dict[str, Any]
    attrs: dict[str, Any]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    trajectory: np.ndarray | None = None
    direction_info: dict[str, Any] = field(default_factory=dict)  # attrs of /directions (kind, PCA ratios, ...)

    @property
    def ndim(self) -> int:
        return 1 if self.ycoordinates is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.done.shape)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    @property
    def label(self) -> str:
        """A short name for plots: the run folder and file stem."""
        return f"{self.path.parent.name}/{self.path.stem}" if self.path.parent.name else self.path.stem

    def available(self) -> list[str]:
        """Value names that hold at least one computed entry."""
        return [k for k, v in self.values.items() if np.isfinite(v).any()]


def _fail(path: Path, what: str) -> SurfaceFileError:
    return SurfaceFileError(f"{path}: {what}")


def _open(path: Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning h5py/OS errors into :class:`SurfaceFileError`."""
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, expected a landscape surface .h5 file")
    try:
        is_h5 = h5py.is_hdf5(str(path))
    except Exception as exc:  # noqa: BLE001
        raise _fail(path, f"cannot be read ({exc})") from None
    if not is_h5:
        raise _fail(path, "is not an HDF5 file (expected a landscape surface .h5 file)")
    try:
        return h5py.File(path, mode)
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError/KeyError/RuntimeError variants
        if "unable to lock file" in str(exc) or getattr(exc, "errno", None) in (11, 35):  # HDF5's own flock
            raise _fail(path, "is in use by another process (HDF5 refused its file lock); wait for that "
                        "process to finish, then retry") from None
        raise _fail(
            path,
            f"is a damaged or truncated HDF5 file and cannot be opened ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); delete it or pass overwrite",
        ) from None


def _on_disk_shape(shape: tuple[int, ...], version: int) -> tuple[int, ...]:
    """The stored shape of a grid of in-memory ``shape`` (version 2 stores 2D grids as (ny, nx))."""
    return tuple(reversed(shape)) if version >= 2 else tuple(shape)


def _to_memory(arr: np.ndarray, version: int) -> np.ndarray:
    """A stored 2D array in the in-memory orientation ``[i, j]`` (x index first)."""
    return np.ascontiguousarray(arr.T) if version >= 2 and arr.ndim == 2 else arr


def _check_layout(f: h5py.File, path: Path) -> int:
    """Validate the schema; returns the file's format version."""
    fmt = _decode_attr(f.attrs.get("format"))
    if fmt != FORMAT:
        hint = ""
        if "xcoordinates" in f and "train_loss" in f:
            hint = " (it looks like a surface from Li et al.'s reference tool, which has no format attribute)"
        elif "xdirection" in f:
            hint = " (it looks like a reference-tool direction file: use landscape.directions.read_reference)"
        raise _fail(
            path,
            f"is not a landscape surface file: root attribute 'format' is {fmt!r}, expected {FORMAT!r}{hint}",
        )
    version = _decode_attr(f.attrs.get("format_version"))
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise _fail(path, f"has format_version {version!r}; this package reads versions 1..{FORMAT_VERSION}")
    for name in ("xcoordinates", "done", *VALUE_NAMES, *_extra_names(f)):
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise _fail(path, f"is incomplete: dataset '{name}' is missing")
    nx = f["xcoordinates"].shape[0] if f["xcoordinates"].ndim == 1 else -1
    if nx < 1:
        raise _fail(path, "dataset 'xcoordinates' must be 1-D and non-empty")
    if "ycoordinates" in f:
        if f["ycoordinates"].ndim != 1 or f["ycoordinates"].shape[0] < 1:
            raise _fail(path, "dataset 'ycoordinates' must be 1-D and non-empty")
        shape: tuple[int, ...] = (nx, f["ycoordinates"].shape[0])
    else:
        shape = (nx,)
    stored = _on_disk_shape(shape, version)
    for name in ("done", *VALUE_NAMES, *_extra_names(f)):
        if tuple(f[name].shape) != stored:
            raise _fail(
                path,
                f"dataset '{name}' has shape {tuple(f[name].shape)}, expected {stored} "
                f"({'ycoordinates x xcoordinates' if version >= 2 else 'xcoordinates x ycoordinates'}, "
                f"format version {version})",
            )
    return version


def _extra_names(f: h5py.File) -> list[str]:
    """The value datasets beyond :data:`VALUE_NAMES` that the file's settings name."""
    try:
        names = json.loads(_decode_attr(f.attrs.get("settings", "{}"))).get(EXTRA_VALUES) or []
    except (TypeError, ValueError, AttributeError):
        return []
    return [str(n) for n in names if str(n) not in VALUE_NAMES]


def read_surface(path: str | os.PathLike[str]) -> Surface:
    """Read and validate a surface file; raises :class:`SurfaceFileError` with a clear message."""
    path = Path(path)
    with _open(path) as f:
        try:
            version = _check_layout(f, path)
            x = np.asarray(f["xcoordinates"][()], dtype=np.float64)
            y = np.asarray(f["ycoordinates"][()], dtype=np.float64) if "ycoordinates" in f else None
            values = {k: _to_memory(np.asarray(f[k][()], dtype=np.float64), version)
                      for k in (*VALUE_NAMES, *_extra_names(f))}
            done = _to_memory(np.asarray(f["done"][()]).astype(bool), version)
            attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
            metrics = {}
            if "metrics" in f:
                for key, grp in f["metrics"].items():
                    metrics[key] = {k: _decode_attr(v) for k, v in grp.attrs.items()}
            trajectory = None
            if "trajectory" in f and "xcoordinates" in f["trajectory"]:
                t = f["trajectory"]
                trajectory = np.stack([t["xcoordinates"][()], t["ycoordinates"][()]], axis=1)
            direction_info = {}
            if "directions" in f:
                direction_info = {k: _decode_json(_decode_attr(v)) for k, v in f["directions"].attrs.items()}
        except SurfaceFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - damaged data blocks surface as assorted errors
            raise _fail(path, f"is damaged: reading it failed ({exc.__class__.__name__}: {exc})") from None
    try:
        settings = json.loads(attrs.get("settings", "{}"))
    except (TypeError, json.JSONDecodeError):
        raise _fail(path, "root attribute 'settings' is not valid JSON") from None
    if not isinstance(settings, dict):
        raise _fail(path, f"root attribute 'settings' is a JSON {type(settings).__name__}; expected an object "
                    "(the settings the surface was computed with)")
    return Surface(path, x, y, values, done, settings, attrs, metrics, trajectory, direction_info)


def read_directions(path: str | os.PathLike[str]) -> dict[str, dict[str, np.ndarray]]:
    """The directions stored in a surface file: ``{"x": {name: array}, "y": {...}}`` in stored order."""
    path = Path(path)
    with _open(path) as f:
        out: dict[str, dict[str, np.ndarray]] = {}
        try:
            _check_layout(f, path)
            if "directions" not in f or not isinstance(f["directions"], h5py.Group) or "x" not in f["directions"]:
                raise _fail(path, "has no 'directions/x' group")
            for axis in ("x", "y"):
                if axis in f["directions"]:
                    grp = f["directions"][axis]
                    names = _decode_json(_decode_attr(grp.attrs.get("names", "null")))
                    names = list(grp.keys()) if names in (None, "null") else names
                    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                        raise _fail(path, f"attribute 'names' of directions/{axis} is {names!r:.60}; expected a "
                                    "JSON list of parameter names")
                    missing = [n for n in names if n not in grp or not isinstance(grp[n], h5py.Dataset)]
                    if missing:
                        raise _fail(path, f"directions/{axis} lists {missing[0]!r} but has no such dataset")
                    out[axis] = {n: np.asarray(grp[n][()]) for n in names}
            info = {k: _decode_json(_decode_attr(v)) for k, v in f["directions"].attrs.items()}
        except SurfaceFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - damaged data blocks surface as assorted errors
            raise _fail(path, f"is damaged: reading its directions failed ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    out["info"] = info  # type: ignore[assignment]
    return out


@contextmanager
def update_surface(path: str | os.PathLike[str], *, wait: float = 0.0,
                   reserve: int = METADATA_RESERVE) -> Iterator[h5py.File]:
    """The surface file open ``r+`` while this process holds its :class:`~landscape.lock.SurfaceLock`.

    For every writer other than :class:`SurfaceWriter` (metrics, eigenvalue maps, ...): waits up to
    ``wait`` seconds for another writer, then raises :class:`~landscape.lock.SurfaceLockedError`; the
    layout is checked before the file is handed out; HDF5 errors while writing (disk full) become
    :class:`SurfaceWriteError`. ``reserve``: bytes that must be free on the disk before the file is opened
    for writing (what will be added, plus :data:`METADATA_RESERVE`): HDF5 failing halfway through a
    metadata write can leave the file unreadable. The file is closed before the lock is released.
    """
    path = Path(path)
    with SurfaceLock(path).acquire(wait=wait):
        require_free(path, reserve)
        f = _open(path, "r+")
        try:
            _check_layout(f, path)
            yield f
            f.flush()
        except (SurfaceFileError, SettingsMismatchError):
            raise
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, OSError) or "errno = " in str(exc):
                raise SurfaceWriteError(describe_write_error(path, exc)) from None
            raise
        finally:
            close_quietly(f)


def write_metrics(path: str | os.PathLike[str], key: str, values: Mapping[str, Any], *, wait: float = 0.0) -> None:
    """Write smoothness metrics as attributes of group ``metrics/<key>`` (replacing old ones), under the
    surface lock (:func:`update_surface`; raises :class:`~landscape.lock.SurfaceLockedError` while another
    process writes the file)."""
    payload = sum(len(str(k)) + len(str(_attr_value(v))) + 64 for k, v in values.items())
    with update_surface(path, wait=wait, reserve=METADATA_RESERVE + 4 * payload) as f:
        grp = f.require_group("metrics").require_group(key)
        for k in list(grp.attrs):
            del grp.attrs[k]
        for k, v in values.items():
            grp.attrs[k] = _attr_value(v)


def write_arrays(path: str | os.PathLike[str], group: str, arrays: Mapping[str, np.ndarray],
                 attrs: Mapping[str, Any] | None = None) -> None:
    """Write extra arrays (e.g. a connecting curve's bend points) as group ``group`` (replacing it).

    ``arrays`` keys may contain ``/`` (sub-groups); read back with :func:`read_arrays`."""
    path = Path(path)
    with _open(path, "r+") as f:
        _check_layout(f, path)
        if group in f:
            del f[group]
        grp = f.create_group(group)
        for k, v in (attrs or {}).items():
            grp.attrs[k] = _attr_value(v)
        for name, arr in arrays.items():
            grp.create_dataset(name, data=np.asarray(arr))


def read_arrays(path: str | os.PathLike[str], group: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays (keys relative to ``group``) and decoded attributes written by :func:`write_arrays`."""
    path = Path(path)
    with _open(path) as f:
        _check_layout(f, path)
        if group not in f:
            raise _fail(path, f"has no '{group}' group")
        out: dict[str, np.ndarray] = {}
        f[group].visititems(lambda k, v: out.__setitem__(k, np.asarray(v[()])) if isinstance(v, h5py.Dataset) else None)
        return out, {k: _decode_json(_decode_attr(v)) for k, v in f[group].attrs.items()}


class SurfaceWriter:
    """An open surface file that takes computed points (see the module docstring for the layout)."""

    def __init__(self, path: Path, handle: h5py.File):
        self.path = path
        self._f = handle
        self._done = handle["done"]
        self.version = int(_decode_attr(handle.attrs["format_version"]))
        stored = tuple(self._done.shape)
        # in-memory shape (nx[, ny]); version 2 stores 2D grids as (ny, nx)
        self.shape = tuple(reversed(stored)) if self.version >= 2 else stored
        self.settings = json.loads(_decode_attr(handle.attrs["settings"]))
        self.value_names = (*VALUE_NAMES, *_extra_names(handle))

    def _disk(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """The stored index of in-memory grid index ``(i[, j])``."""
        return tuple(reversed(index)) if self.version >= 2 else tuple(index)

    # ----------------------------------------------------------------- creation / reuse
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        settings: Mapping[str, Any],
        xcoordinates: np.ndarray,
        ycoordinates: np.ndarray | None,
        directions: Mapping[str, Mapping[str, np.ndarray]],
        direction_info: Mapping[str, Any] | None = None,
        trajectory: np.ndarray | None = None,
        mode: str = "resume",
    ) -> SurfaceWriter:
        """Create ``path`` or reuse it when its settings match.

        ``mode``: ``resume`` (reuse a matching file, refuse a different one), ``overwrite``
        (replace any existing file) or ``new`` (keep the existing file, write ``<stem>-N.h5``).
        """
        if mode not in ("resume", "overwrite", "new"):
            raise ValueError(f"mode must be 'resume', 'overwrite' or 'new', got {mode!r}")
        path = Path(path)
        settings = _jsonable(dict(settings))
        if path.exists() and mode == "new":
            stem, k = path.stem, 1
            while (path.parent / f"{stem}-{k}{path.suffix}").exists():
                k += 1
            path = path.parent / f"{stem}-{k}{path.suffix}"
        check_grid_memory((len(xcoordinates),) if ycoordinates is None else (len(xcoordinates), len(ycoordinates)))
        lock = SurfaceLock(path).acquire()  # one writer per surface file until close()
        try:
            remove_stale_temporaries(path.parent, path.name)
            writer = cls._open_locked(path, settings, xcoordinates, ycoordinates, directions, direction_info,
                                      trajectory, mode)
        except BaseException:
            lock.release()
            raise
        writer._lock = lock
        return writer

    @classmethod
    def _open_locked(cls, path: Path, settings: dict[str, Any], xcoordinates: np.ndarray,
                     ycoordinates: np.ndarray | None, directions: Mapping[str, Mapping[str, np.ndarray]],
                     direction_info: Mapping[str, Any] | None, trajectory: np.ndarray | None,
                     mode: str) -> SurfaceWriter:
        if path.exists():
            if mode == "resume":
                existing = read_surface(path)
                diff = settings_difference(existing.settings, settings)
                if diff:
                    lines = "\n".join(f"  {k}: file has {a!r}, requested {b!r}" for k, (a, b) in diff.items())
                    raise SettingsMismatchError(
                        f"{path} was computed with different settings:\n{lines}\n"
                        "Refusing to mix them. Pass overwrite (CLI --overwrite) to replace the file, or "
                        "new (CLI --new-file) to write a new file next to it."
                    )
                return cls(path, _open(path, "r+"))
        cls._create(path, settings, xcoordinates, ycoordinates, directions, direction_info, trajectory)
        return cls(path, _open(path, "r+"))

    @staticmethod
    def _create(
        path: Path,
        settings: dict[str, Any],
        xcoordinates: np.ndarray,
        ycoordinates: np.ndarray | None,
        directions: Mapping[str, Mapping[str, np.ndarray]],
        direction_info: Mapping[str, Any] | None,
        trajectory: np.ndarray | None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        x = np.asarray(xcoordinates, dtype=np.float64).reshape(-1)
        shape: tuple[int, ...] = (x.size,)
        if ycoordinates is not None:
            y = np.asarray(ycoordinates, dtype=np.float64).reshape(-1)
            shape = (y.size, x.size)  # on disk: (ny, nx), Z[j, i] = f(x[i], y[j])
        buffer = io.BytesIO()  # built in memory: HDF5 never sees a full disk (its write errors can crash)
        with h5py.File(buffer, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["ndim"] = len(shape)
            f.attrs["settings"] = json.dumps(settings, sort_keys=True)
            for k, v in settings.items():
                f.attrs[k] = _attr_value(v)
            f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            f.attrs["nonfinite_points"] = 0
            f.create_dataset("xcoordinates", data=x)
            if len(shape) == 2:
                f.create_dataset("ycoordinates", data=y)
            extra = [n for n in settings.get(EXTRA_VALUES) or [] if n not in VALUE_NAMES]
            for name in (*VALUE_NAMES, *extra):  # contiguous + written now: later writes touch raw data only
                f.create_dataset(name, data=np.full(shape, np.nan), fillvalue=np.nan)
            f.create_dataset("done", data=np.zeros(shape, dtype=np.uint8))
            grp = f.create_group("directions")
            for k, v in (direction_info or {}).items():
                grp.attrs[k] = _attr_value(v)
            for axis in ("x", "y")[: len(shape)]:
                if axis not in directions:
                    raise ValueError(f"a {len(shape)}D surface needs a '{axis}' direction")
                sub = grp.create_group(axis)
                names = list(directions[axis])
                sub.attrs["names"] = json.dumps(names)
                for name in names:
                    sub.create_dataset(name, data=np.asarray(directions[axis][name], dtype=np.float32))
            if trajectory is not None:
                t = f.create_group("trajectory")
                t.create_dataset("xcoordinates", data=np.asarray(trajectory)[:, 0])
                t.create_dataset("ycoordinates", data=np.asarray(trajectory)[:, 1])
        write_atomic(path, buffer.getbuffer())

    # ----------------------------------------------------------------- points
    def done(self) -> np.ndarray:
        """The ``done`` mask in the in-memory orientation ``[i, j]``."""
        return _to_memory(np.asarray(self._done[()]).astype(bool), self.version)

    def pending(self) -> list[tuple[int, ...]]:
        """Grid indices ``(i[, j])`` not yet stored (the ``done`` mask, not loss values), coarse to fine.

        The order is :func:`landscape.grid.coarse_to_fine`: every 2^k-th point first, so an
        interrupted surface already holds a complete lower-resolution grid.
        """
        from .grid import coarse_to_fine

        done = self.done()
        return [idx for idx in coarse_to_fine(self.shape) if not done[idx]]

    def write(self, results: Iterable[tuple[tuple[int, ...], Mapping[str, float]]]) -> None:
        """Store ``(index, {value_name: value})`` pairs: values first (flushed), then ``done`` (flushed).

        ``index`` is the in-memory grid index ``(i[, j])``. Points holding a non-finite value are
        counted in the root attribute ``nonfinite_points``.
        """
        results = list(results)
        if not results:
            return
        for _, vals in results:
            for name in vals:
                if name not in self.value_names:
                    raise KeyError(f"unknown value name {name!r}; expected one of {self.value_names}")
        with self._write_errors():
            bad = 0
            for index, vals in results:
                disk = self._disk(index)
                for name, value in vals.items():
                    self._f[name][disk] = float(value)
                bad += any(not math.isfinite(float(v)) for v in vals.values())
            if bad:
                self._f.attrs["nonfinite_points"] = int(_decode_attr(self._f.attrs.get("nonfinite_points", 0))) + bad
            self._f.flush()
            for index, _ in results:
                self._done[self._disk(index)] = 1
            self._f.flush()

    @contextmanager
    def _write_errors(self) -> Iterator[None]:
        """HDF5/OS write errors (disk full, read-only) as :class:`SurfaceWriteError`, the file closed first."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            if not isinstance(exc, OSError) and "errno = " not in str(exc):
                raise
            self.close()
            raise SurfaceWriteError(describe_write_error(self.path, exc)) from None

    def set_attribute(self, name: str, value: Any) -> None:
        """Write a root attribute that is not a compared setting (e.g. ``engine``: the evaluation
        settings actually used by the latest run, see ``landscape.engine.SurfaceEngine.settings``)."""
        if name == "settings" or name in self.settings:
            raise ValueError(f"{name!r} is a compared setting of the file; it cannot be rewritten")
        value = _attr_value(value)
        require_free(self.path, METADATA_RESERVE + 4 * len(str(value)))
        with self._write_errors():
            self._f.attrs[name] = value
            self._f.flush()

    def close(self) -> None:
        """Close the file (dropping close errors after a failed write), then release the lock."""
        close_quietly(self._f)
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def __enter__(self) -> SurfaceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (identifies checkpoints and input files in the surface settings)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
