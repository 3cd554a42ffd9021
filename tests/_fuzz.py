"""Shared pieces of the structure-aware fuzz tests of the file readers (issue 24)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: bounded: the three fuzzed readers together take about a minute
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: where to cut a file (a fraction of its length; below 0.1: flip one byte at ``flip`` instead)
CUTS = st.floats(0.0, 1.0, exclude_max=True)
FLIPS = st.integers(0, 2**31)


def damaged_copy(src: Path, dst: Path, cut: float, flip: int) -> Path:
    """``src`` truncated to ``cut`` of its length, or (``cut`` < 0.1) with the byte at ``flip`` inverted."""
    raw = bytearray(src.read_bytes())
    if cut >= 0.1:
        raw = raw[: int(len(raw) * cut)]
    elif raw:
        raw[flip % len(raw)] ^= 0xFF
    dst.write_bytes(bytes(raw))
    return dst
