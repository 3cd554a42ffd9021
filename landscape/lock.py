"""One writer per surface file: an exclusive ``flock`` on ``.<name>.lock`` next to it, held while writing.

:class:`SurfaceLock` is taken by every writer of a surface file, whatever the file system (HDF5's own
file locking is usually off on NFS and Lustre: ``HDF5_USE_FILE_LOCKING=FALSE``):
:meth:`landscape.store.SurfaceWriter.open` (compute, merge) before the file is read, created or
replaced, until ``close``; :func:`landscape.store.update_surface` (plot's metrics, eigenvalue maps)
around its ``r+`` handle. A second process (another ``compute`` on the same output, ``--overwrite``
of a file being computed, ``plot`` storing metrics meanwhile) stops at once with :class:`SurfaceLockedError`
naming the holder's PID. :func:`remove_stale_temporaries` deletes the ``.<name>.<pid>.tmp`` files of
writers killed while creating a surface (their PID is gone and nobody holds the file's lock).

(``bnext.io`` has the same rules for run folders; ``landscape`` never imports ``bnext``.)
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from pathlib import Path

__all__ = ["LockFileError", "SurfaceLock", "SurfaceLockedError", "remove_stale_temporaries"]

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(\.[A-Za-z0-9_]+)?\.tmp$")


class SurfaceLockedError(RuntimeError):
    """Another process is writing the surface file (the message names its PID)."""


class LockFileError(OSError):
    """The lock file cannot be created (read-only folder, ...); the message is one line."""

    def __str__(self) -> str:
        return str(self.strerror)


class SurfaceLock:
    """An exclusive, non-blocking lock on ``path`` (via ``.<name>.lock`` in the same folder)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._fd = -1

    def acquire(self, wait: float = 0.0) -> SurfaceLock:
        """Take the lock, waiting up to ``wait`` seconds for a holder to finish, else raise
        :class:`SurfaceLockedError`; returns ``self``."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + max(0.0, float(wait))
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:  # a read-only folder, no inodes left, ...
                raise LockFileError(exc.errno, f"cannot write {self.path}: cannot create its lock file "
                                    f"{self.lock_path.name} ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                try:
                    holder = self.lock_path.read_text().strip() or "unknown PID"
                except OSError:
                    holder = "unknown PID"
                raise SurfaceLockedError(f"{self.path} is in use by another process ({holder}); wait for it to "
                                         "finish or write another file") from None
            except OSError as exc:  # ENOSYS/ENOLCK/EOPNOTSUPP: no flock here (Lustre mounted without -o flock)
                os.close(fd)
                raise LockFileError(exc.errno, f"cannot lock {self.path}: the file system refuses flock "
                                    f"({exc.strerror}); on Lustre mount with -o flock, or write the surface "
                                    "on a file system with locks") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino  # not one a releaser just removed
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:  # who holds it, for the message of a refused writer; the flock alone is the lock
            os.ftruncate(fd, 0)
            os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
        except OSError:
            pass  # a full disk: the writer itself reports it
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file (still holding it) and drop the lock; a no-op when not held."""
        if self._fd < 0:
            return
        try:
            self.lock_path.unlink()
        except OSError:
            pass
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> SurfaceLock:
        return self if self._fd >= 0 else self.acquire()  # ``with SurfaceLock(p).acquire(wait=5):`` works too

    def __exit__(self, *exc: object) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp`` files in ``folder`` (of target ``name``, or all) whose PID is dead."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if not m or (name is not None and m["name"] != name):
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed
