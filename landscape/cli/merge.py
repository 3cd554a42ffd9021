"""``python -m landscape merge PARTS... --out FILE``: join the part files of a sharded surface."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..merge import merge_parts, whole_path
    from ..store import read_surface

    out = Path(args.out) if args.out else whole_path(args.parts[0])
    if out is None:
        raise ValueError(f"{args.parts[0]} is not named like a part (<stem>.part-I-of-N.h5): give --out")
    report = merge_parts(args.parts, out, overwrite=args.overwrite)
    print(f"merged {len(report.parts)} part(s) into {report.path}: {report.done} of {report.total} points")
    if report.missing_shards:
        print(f"missing shard(s): {', '.join(map(str, report.missing_shards))}", file=sys.stderr)
    if report.missing:
        s = read_surface(report.path)
        shown = []
        for idx in report.missing[:5]:
            xy = [float(s.xcoordinates[idx[0]])] + ([float(s.ycoordinates[idx[1]])] if len(idx) > 1 else [])
            shown.append(f"{idx} at ({', '.join(f'{v:g}' for v in xy)})")
        more = f" ... and {len(report.missing) - 5} more" if len(report.missing) > 5 else ""
        print(f"{len(report.missing)} point(s) missing: {'; '.join(shown)}{more}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``merge`` subcommand."""
    m = sub.add_parser("merge", help="join the part files of a sharded surface (compute --shard I/N)")
    m.add_argument("parts", nargs="+", help="part files <stem>.part-I-of-N.h5")
    m.add_argument("--out", help="merged file (default: the parts' <stem>.h5)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing --out made with other settings")
    m.set_defaults(func=run)
