"""Shared test set-up: deterministic seeds, headless plotting, few threads (2-core machines)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# idle OpenMP threads must sleep, not spin: on a busy 2-core machine spinning threads slow tiny
# ops by orders of magnitude (set before torch loads; subprocesses inherit it)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
