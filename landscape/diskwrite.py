"""Writing surface files on disks that fill up or refuse writes (see :mod:`landscape.store`).

A new file is built in memory and written here with plain OS writes (:func:`write_atomic`), never by
HDF5 itself: HDF5 failing to write (disk full) can crash the process when its handles are closed.
Metadata added to an existing file is refused up front when the disk lacks room
(:func:`require_free`): a metadata write failing halfway leaves the whole file unreadable. Every
failure is a :class:`SurfaceWriteError` with one line naming the file and the cause.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py


class SurfaceWriteError(ValueError):
    """A surface file could not be written (disk full, read-only, ...); the message is one line."""


def describe_write_error(path: str | os.PathLike[str], err: BaseException) -> str:
    """One line: the file, the cause (from an ``OSError`` or HDF5's errno text), and what was kept."""
    code = getattr(err, "errno", None)
    if not isinstance(code, int):
        text = str(err)
        code = next((c for c in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)
                     if f"errno = {c}," in text), None)
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}.get(code or 0)
    if reason is None:
        first = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        reason = getattr(err, "strerror", None) or first
    return f"cannot write {path}: {reason}" + (f" (errno {code})" if code else "") + \
        "; nothing stored before is lost"


#: free bytes required before HDF5 adds metadata to an existing file: a metadata write that fails on
#: a full disk can leave the whole file unreadable, so such writes are refused up front instead
METADATA_RESERVE = 64 << 10


def require_free(path: Path, need: int) -> None:
    """Raise :class:`SurfaceWriteError` (the file untouched) when the disk of ``path`` has less than ``need``
    bytes free (:data:`METADATA_RESERVE` plus what is about to be written)."""
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return  # cannot tell: let the write report it
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise SurfaceWriteError(describe_write_error(path, OSError(errno.ENOSPC, "No space left on device"))
                                + f" ({free:,} bytes free, {need:,} needed)")


def close_quietly(f: h5py.File) -> None:
    """Close an HDF5 file whose last writes may have failed (disk full): close errors are dropped,
    the handle is never left to the garbage collector (where a failing flush can crash the process)."""
    try:
        if f.id.valid:
            f.close()
    except Exception:  # noqa: BLE001 - the write error that brought us here is the one to report
        pass


def write_atomic(path: Path, data: memoryview | bytes) -> None:
    """``data`` to ``.<name>.<pid>.tmp`` (mode from the umask), fsync, rename over ``path``; on an OS
    error the temporary is removed, ``path`` is untouched and :class:`SurfaceWriteError` is raised."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except OSError as exc:
        raise SurfaceWriteError(describe_write_error(path, exc)) from None
    finally:
        if fd >= 0:
            os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
