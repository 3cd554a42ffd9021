"""What every ``python -m bnext.*`` command line shares: ``--threads`` and progress on stderr.

Rules of the workbench's command lines (tests/test_cli.py checks them for every ``__main__``):

- ``--help`` imports neither torch nor numba: argument parsing needs only the standard library and
  torch-free modules (``bnext.quant.spec``, ``bnext.train.config``); heavy imports go inside the
  command functions.
- A command that can run longer than a few seconds talks: a tqdm bar per pass over data or per
  model, on stderr, so stdout stays the result (tables, JSON) and can be piped.
- ``--threads N`` where torch runs (1 is fastest for small models on a busy machine).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def add_threads_argument(ap: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--threads N``: torch intra-op threads for the command (default: torch's own choice)."""
    ap.add_argument("--threads", type=int, default=default, metavar="N",
                    help="compute threads of torch (and numba)"
                         + (f" (default {default})" if default else " (default: torch's, all cores)")
                         + "; 1 is often fastest for small models on a busy machine")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` unless ``threads`` is None; a value below 1 is a ValueError."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def progress(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "batch") -> Iterator[T]:
    """Iterate ``iterable`` with a tqdm bar on stderr, opened when the iteration starts.

    ``total`` caps the shown total at a loop's own limit (e.g. ``--calib-batches``). A loop that never
    iterates prints nothing; one that stops early closes its bar when the generator is dropped.
    """
    from tqdm import tqdm

    if total is not None and hasattr(iterable, "__len__"):
        total = min(total, len(iterable))  # type: ignore[arg-type]
    with tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True) as bar:
        yield from bar


def note(message: str) -> None:
    """One progress line on stderr (a step that has no loop to show)."""
    print(message, file=sys.stderr, flush=True)
