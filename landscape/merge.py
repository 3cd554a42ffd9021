"""Join the part files of a sharded surface (``compute --shard i/n``) into one surface file.

A grid computed as a job array writes one part per shard, ``<stem>.part-<i>-of-<n>.h5``: the full
grid's layout, with the points of shard ``i`` (every n-th point of the coarse-to-fine order,
:func:`landscape.grid.coarse_to_fine`) filled in and flagged ``done``. :func:`merge_parts` checks
that every part was computed with the same settings and directions (refusing otherwise, naming the
difference), writes their values and ``done`` masks into one file through the store's API (the
same settings as a one-process computation, so it is resumable like one) and reports the points no
part holds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .store import SurfaceWriter, read_directions, read_surface, settings_difference

SHARD_KEY = "shard"
_PART = re.compile(r"^(?P<stem>.+)\.part-(?P<i>\d+)-of-(?P<n>\d+)$")


class MergeError(ValueError):
    """Parts that cannot be joined: other settings, other directions, other grids."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/16"`` -> ``(2, 16)`` (1-based shard index ``i`` of ``n``)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ValueError(f"shard {text!r} must be I/N with 1 <= I <= N: shards count from 1 (1/2 and 2/2 make two)")
    return int(m.group(1)), int(m.group(2))


def part_path(path: str | os.PathLike[str], i: int, n: int) -> Path:
    """``runs/a/landscape_random_2d.h5`` -> ``runs/a/landscape_random_2d.part-3-of-16.h5``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.part-{i}-of-{n}{path.suffix}")


def whole_path(part: str | os.PathLike[str]) -> Path | None:
    """The merged file a part belongs to (None when the name is not a part's)."""
    part = Path(part)
    m = _PART.match(part.stem)
    return part.with_name(m.group("stem") + part.suffix) if m else None


@dataclass
class MergeReport:
    path: Path
    parts: list[Path]
    total: int
    done: int
    missing: list[tuple[int, ...]] = field(default_factory=list)
    missing_shards: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing


def _directions_equal(a: dict, b: dict) -> str | None:
    """None when equal, else what differs."""
    for axis in ("x", "y"):
        if (axis in a) != (axis in b):
            return f"one has a {axis} direction, the other not"
        if axis not in a:
            continue
        if list(a[axis]) != list(b[axis]):
            return f"the {axis} directions cover other parameters"
        for name, v in a[axis].items():
            if v.shape != b[axis][name].shape or not np.array_equal(v, b[axis][name]):
                return f"the {axis} direction differs in {name!r}"
    return None


def merge_parts(parts: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                overwrite: bool = False) -> MergeReport:
    """Write the union of ``parts`` into ``out`` (see the module docstring); raises :class:`MergeError`.

    An existing ``out`` with the same settings is completed (points already in it are kept);
    one with other settings is refused unless ``overwrite``.
    """
    paths = [Path(p) for p in parts]
    if not paths:
        raise MergeError("no part files given")
    if len(set(map(str, (p.resolve() for p in paths)))) != len(paths):
        raise MergeError("a part file is given twice")
    surfaces = [read_surface(p) for p in paths]
    first, first_dirs = surfaces[0], read_directions(paths[0])
    base = {k: v for k, v in first.settings.items() if k != SHARD_KEY}
    shards: dict[int, Path] = {}
    count = None
    for path, surface in zip(paths, surfaces):
        shard = surface.settings.get(SHARD_KEY)
        if shard is not None:
            i, n = parse_shard(shard)
            if count is not None and n != count:
                raise MergeError(f"{path} is shard {shard} but {paths[0]} belongs to a split into {count} shards")
            count = n
            if i in shards:
                raise MergeError(f"{path} and {shards[i]} are both shard {shard}")
            shards[i] = path
        if surface is first:
            continue
        diff = settings_difference(base, {k: v for k, v in surface.settings.items() if k != SHARD_KEY})
        if diff:
            name, (a, b) = next(iter(diff.items()))
            more = f" (and {len(diff) - 1} more setting(s): {', '.join(list(diff)[1:])})" if len(diff) > 1 else ""
            raise MergeError(f"{path} was computed with other settings than {paths[0]}: {name} is {b!r}, not "
                             f"{a!r}{more}; refusing to merge")
        if surface.shape != first.shape or not np.array_equal(surface.xcoordinates, first.xcoordinates) or (
                first.ycoordinates is not None and not np.array_equal(surface.ycoordinates, first.ycoordinates)):
            raise MergeError(f"{path} covers another grid than {paths[0]}; refusing to merge")
        what = _directions_equal(first_dirs, read_directions(path))
        if what:
            raise MergeError(f"{path} has other directions than {paths[0]} ({what}); refusing to merge")
    names = [f"{s}_{m}" for s in base.get("splits", ["train"]) for m in ("loss", "acc")]
    names += list(base.get("objective_values") or [])  # metrics of landscape.objectives
    info = first_dirs.get("info", {})
    writer = SurfaceWriter.open(
        out, settings=base, xcoordinates=first.xcoordinates, ycoordinates=first.ycoordinates,
        directions={k: v for k, v in first_dirs.items() if k in ("x", "y")}, direction_info=info,
        trajectory=first.trajectory, mode="overwrite" if overwrite else "resume",
    )
    try:
        left = set(writer.pending())
        for surface in surfaces:
            batch = []
            for idx in (tuple(int(v) for v in p) for p in np.argwhere(surface.done)):
                if idx in left:
                    batch.append((idx, {k: float(surface.values[k][idx]) for k in names}))
                    left.discard(idx)
            writer.write(batch)
        missing = sorted(left)
        out_path = writer.path
    finally:
        writer.close()
    total = int(np.prod(first.shape))
    return MergeReport(Path(out_path), paths, total, total - len(missing), missing,
                       sorted(set(range(1, count + 1)) - set(shards)) if count else [])
