"""Atomic file writes, one writer per run folder, and clean-up of temporaries left by killed writers.

- :func:`atomic_open`: a temp file ``.<name>.<pid>.<random>.tmp`` in the target's folder (locked
  with ``flock`` while it is written), fsync, then ``os.replace``: a reader, or a run killed
  mid-write, never sees half a checkpoint, packed model or result file, and the previous file is
  kept when the write fails (disk full, read-only folder: :class:`FileWriteError`, one line).
- :func:`lock_folder`: an exclusive ``flock`` on ``<folder>/.lock`` held for a whole run; a second
  process stops at once with :class:`FolderLockedError` naming the holder's PID.
- :func:`remove_stale_temporaries`: deletes the temporaries of writers that are gone (their PID is
  dead and nobody holds the temp file's lock).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["FileWriteError", "FolderLockedError", "atomic_open", "describe_write_error", "lock_folder",
           "remove_stale_temporaries"]

LOCK_NAME = ".lock"
# .<name>.<pid>.tmp (landscape store, result.json) or .<name>.<pid>.<random>.tmp (atomic_open)
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(\.[A-Za-z0-9_]+)?\.tmp$")


class FileWriteError(OSError):
    """A file could not be written (disk full, read-only folder, ...); the message is one line."""

    def __str__(self) -> str:
        return str(self.strerror)


class FolderLockedError(RuntimeError):
    """Another process holds the folder's lock (the message names its PID)."""


def describe_write_error(path: str | os.PathLike, err: OSError) -> str:
    """One line: the file, what the OS said, and that the previous file (if any) is untouched."""
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}.get(err.errno or 0, err.strerror or str(err))
    return f"cannot write {path}: {reason} (errno {err.errno}); the previous file, if any, is kept"


def current_umask() -> int:
    """The process's umask, read without changing it (``/proc/self/status``; else set and restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path`` for writing; on success rename it over ``path``.

    OS errors (disk full, read-only or missing permissions) become :class:`FileWriteError` naming
    ``path``; the temp file is removed and an existing ``path`` is left as it was. The file gets the
    mode a plain ``open`` would give (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open writes files; got mode {mode!r}")
    path = Path(path)
    tmp = None
    fd = -1
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the rename: remove_stale_temporaries leaves it alone
        os.fchmod(fd, 0o666 & ~current_umask())  # colleagues read results as the umask allows
        with os.fdopen(os.dup(fd), mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if isinstance(e, FileWriteError):
            raise
        raise FileWriteError(e.errno, describe_write_error(path, e)) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this machine (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.<pid>[.<random>].tmp`` files in ``folder`` whose writer is gone; returns them.

    A temp file is stale when its PID is not a live process on this machine and no process holds
    its ``flock`` (a writer on another host sharing the folder keeps its lock while writing).
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if not m or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
            continue
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            p.unlink()
            removed.append(p)
        except OSError:
            pass  # locked by a live writer elsewhere, or already gone
        finally:
            os.close(fd)
    return removed


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text().strip()
    except OSError:
        text = ""
    return text or "unknown PID"


@contextmanager
def lock_folder(folder: str | os.PathLike, what: str = "run folder") -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``<folder>/.lock`` (created) for the ``with`` block.

    Raises :class:`FolderLockedError` at once when another process holds it, naming its PID and host.
    The lock file is removed on release (while still locked, so a waiting process retries).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FileWriteError(e.errno, describe_write_error(folder, e)) from None
    lock = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise FileWriteError(e.errno, describe_write_error(lock, e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLockedError(f"{what} {folder} is in use by another process ({_holder(lock)}); wait for "
                                    f"it to finish or choose another folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a file the previous holder just removed
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
        yield lock
    finally:
        try:
            lock.unlink()
        except OSError:
            pass
        os.close(fd)
