"""Command line: ``python -m landscape compute|plot|compare|merge|hessian|connect|flips`` (thin library wrappers).

Each subcommand lives in its own module of :mod:`landscape.cli` (``register`` adds its parser,
``run`` executes it). Only :mod:`landscape.cli` imports :mod:`bnext`: it rebuilds models from
checkpoints, loads evaluation data and plugs the packed XNOR-popcount engine in as the forward
for binary models. Heavy modules are imported when a command runs, so ``--help`` is quick.

Examples::

    python -m landscape compute --checkpoint runs/digits/checkpoints/best.pt --x -1:1:21 --y -1:1:21
    python -m landscape compute --model bnext18 --model-option width=0.25 --x -1:1:11 --y -1:1:11
    python -m landscape plot runs/digits/landscape_random_2d.h5
    python -m landscape compare runs/a/landscape_random_2d.h5 runs/b/landscape_random_2d.h5 --labels A B
    python -m landscape merge runs/a/landscape_random_2d.part-*-of-16.h5 --out runs/a/landscape_random_2d.h5
    python -m landscape hessian --checkpoint runs/digits/checkpoints/best.pt --top-k 5 --trace --density
    python -m landscape connect runs/a/checkpoints/best.pt runs/b/checkpoints/best.pt --curve bezier --bends 1
    python -m landscape flips runs/digits/checkpoints/best.pt --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli import compute, connect, flips, hessian, merge, plot

COMMANDS = (compute, plot, merge, hessian, connect, flips)  # each module: register(subparsers) and its run function


def build_parser() -> argparse.ArgumentParser:
    try:  # the workbench's parser: "did you mean --checkpoint?" and plain-text help
        from bnext.cli import ArgumentParser
    except ImportError:  # landscape without bnext
        ArgumentParser = argparse.ArgumentParser  # noqa: N806
    p = ArgumentParser(
        prog="python -m landscape",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return p


_VALUE_OPTIONS = ("--x", "--y", "--levels", "--zlim")


def _join_negative_values(argv: list[str]) -> list[str]:
    """Let ``--x -1:1:21`` work like ``--x=-1:1:21`` (argparse reads ``-1:1:21`` as an option)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m landscape`` and the ``landscape`` script."""
    from .lock import SurfaceLockedError
    from .store import SettingsMismatchError, SurfaceFileError

    args = build_parser().parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        return int(args.func(args) or 0)
    except (SettingsMismatchError, SurfaceFileError, SurfaceLockedError, ValueError, KeyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
