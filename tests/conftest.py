"""Shared test set-up: deterministic seeds, headless plotting, few threads (2-core machines)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# idle OpenMP threads must sleep, not spin: on a busy 2-core machine spinning threads slow tiny
# ops by orders of magnitude (set before torch loads; subprocesses inherit it)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# Test models are tiny: one intra-op thread is fastest and immune to busy-waiting on a loaded
# machine (benchmarks, not tests, measure multi-threaded speed).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
    torch.set_num_threads(1)  # a test that changed it must not slow (or speed) the next
