"""The packed engine's batches on the landscape engine's single-threaded workers (``concurrent_batches``):
the same values, logits and audit margins as one thread, bit for bit, on the fused BNext path and on
plain packed convs (bireal18)."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from landscape.directions import random_directions
from landscape.engine import SurfaceEngine

from ..landscape.test_engine_workers import threads
from .test_engine_invariance_packed import digits, zoo


@pytest.mark.parametrize("name", ["bnext18", "bireal18"])
def test_packed_batches_on_workers_equal_one_thread(name):
    model = zoo(name)
    x, y = digits(150, seed=7)
    dirs = random_directions(model, seed=1)
    out = {}
    for n in (2, 1):
        with threads(n), SurfaceEngine(copy.deepcopy(model), dirs, {"train": (x, y)}, batch_size=32) as e:
            assert e.settings["forward"] == "packed" and e.settings["batch_workers"] == n
            e.set_point(0.3, -0.2)
            with torch.inference_mode():
                vals, kept = e._measure(e.forward_factory(e.work), keep=True)  # what evaluate() runs
            out[n] = (vals, kept["train"], kept["train/margin"], [e.evaluate(*p) for p in ((0.3, -0.2), (-0.8, 0.5))])
    assert out[2][0] == out[1][0] and out[2][3] == out[1][3]
    assert torch.equal(out[2][1], out[1][1])
    assert torch.isfinite(out[2][2]).all()  # every image's margin recorded, by whichever worker ran its batch
    assert torch.equal(out[2][2], out[1][2])


def test_packed_model_runs_single_threaded_kernels_on_a_worker():
    """A packed forward on a thread whose torch calls are single-threaded launches no parallel numba region
    (numba's workqueue layer aborts the process on concurrent launches)."""
    from bnext.packed import pack
    from bnext.packed import threads as packed_threads
    from landscape.threads import run_ordered

    packed = pack(zoo("bnext18"), fuse_float=True)
    seen = []
    set_threads = packed_threads.set_threads

    def spy(n: int) -> int:
        seen.append((threading.current_thread().name, n))
        return set_threads(n)

    x = digits(64)[0]
    packed_threads.set_threads = spy
    import bnext.packed.kernels as kernels

    kernels.set_threads = spy
    try:
        with threads(2):
            got = run_ordered(lambda s: packed(x[s : s + 32]), [0, 32], 2, name="packed-test")
    finally:
        packed_threads.set_threads = kernels.set_threads = set_threads
    firsts = {}
    for thread, n in seen:
        firsts.setdefault(thread, n)
    assert firsts and set(firsts.values()) == {1}  # each worker's forward ran on 1 numba thread
    with torch.inference_mode():
        assert torch.equal(torch.cat(got), packed(x))
