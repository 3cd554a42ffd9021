"""Workers that die with their runner, and one live worker per point.

* :func:`die_with_parent` (called first thing in ``python -m bnext.ablate.worker``): Linux's
  ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` through ctypes, plus a watchdog thread polling the parent's
  PID (the fallback on other systems and for a parent that died before the call). Either way the
  worker kills its whole process tree (the papermill kernel runs in a session of its own, so a
  process-group kill would miss it) and exits.
* :class:`PointLock`: an exclusive ``flock`` on ``<run-dir>/.point.lock`` holding the PID of the
  process that runs the point. The runner takes it before starting a worker and hands the open
  file to the worker, so the lock lives as long as either of them: a rerun after the runner was
  killed never starts a point whose worker is still alive.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
LOCK_NAME = ".point.lock"


def _children() -> dict[int, list[int]]:
    """``{ppid: [pid, ...]}`` for every process visible in ``/proc`` (empty where there is no /proc)."""
    tree: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            tree.setdefault(int(fields[1]), []).append(int(name))
    return tree


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (children first, then theirs)."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int | None = None, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to every descendant of ``pid`` (default: this process) and to their process groups."""
    pid = os.getpid() if pid is None else pid
    victims = descendants(pid)
    own_group = os.getpgid(0)
    for p in victims:
        try:
            group = os.getpgid(p)
            if group == p and group != own_group:  # a session/group leader such as the kernel: its whole group
                os.killpg(group, sig)
            else:
                os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            continue
    return victims


def _terminate(reason: str) -> None:
    print(f"[bnext.ablate.worker] {reason}: stopping the notebook kernel and exiting", file=sys.stderr, flush=True)
    kill_tree()
    os._exit(143)


def die_with_parent(parent_pid: int, *, poll_s: float = 0.5) -> None:
    """Make this process (and its process tree) end when ``parent_pid`` ends.

    Installs a SIGTERM handler that kills the tree, asks Linux for SIGTERM at the parent's death
    (``PR_SET_PDEATHSIG``; fires when the parent *thread* that started us ends, which the runner
    keeps alive until the worker exits) and starts a daemon thread watching ``os.getppid()``.
    """
    signal.signal(signal.SIGTERM, lambda *_: _terminate("terminated"))
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watchdog below still covers it
    if os.getppid() != parent_pid:  # the parent died before the prctl call
        _terminate(f"the runner (PID {parent_pid}) is gone")

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent_pid:
                _terminate(f"the runner (PID {parent_pid}) is gone")

    threading.Thread(target=watch, name="bnext-ablate-watchdog", daemon=True).start()


class PointBusyError(RuntimeError):
    """Another live process runs this point."""

    def __init__(self, run_dir: Path, pid: int | None):
        self.run_dir, self.pid = run_dir, pid
        who = f"PID {pid}" if pid else "another process"
        super().__init__(f"{run_dir.name} is still running in {who} (lock {run_dir / LOCK_NAME}); not started again")


def lock_holder(run_dir: Path) -> int | None:
    """PID recorded in the point's lock file when the lock is held by a live process, else None."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class PointLock:
    """Exclusive, non-blocking ``flock`` on ``<run_dir>/.point.lock`` (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.fd: int | None = None

    def acquire(self, pid: int | None = None) -> PointLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise PointBusyError(self.run_dir, int(text) if text.isdigit() else None) from None
            raise
        self.fd = fd
        self.record(pid or os.getpid())
        return self

    def record(self, pid: int) -> None:
        """Write the PID of the process that now runs the point."""
        if self.fd is not None:  # overwrite, then cut: a reader never sees an empty file
            data = f"{pid}\n".encode()
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # the lock goes when the last process holding this open file closes it
            self.fd = None

    def __enter__(self) -> PointLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
