"""The one-call fused BNext module (bnext.packed.fused_passes): its pieces against torch, the bit hand-over
between chained modules, buffer reuse, and the SE fallback.

The module-level and end-to-end tolerance tests are in ``test_fused_bnext.py``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torch import nn

from bnext.models.bnext import InfoRCPModule
from bnext.models.common import avg_pool2x2
from bnext.packed import pack, repack_
from bnext.packed.fused_bnext import FusedInfoRCPModule, link_fused_modules
from bnext.packed.fused_passes import BufferPool, prelu_avgpool2x2

from .test_fused_bnext import variant
from .test_landscape_fastpath import zoo_model


@pytest.mark.parametrize("shape", [(3, 5, 8, 8), (2, 3, 7, 5), (1, 2, 1, 3)])
@pytest.mark.parametrize("threads", [1, 2])
def test_prelu_avgpool_equals_torch_bit_for_bit(shape, threads):
    g = torch.Generator().manual_seed(sum(shape))
    u = torch.randn(shape, generator=g)
    slopes = torch.rand(shape[1], generator=g)
    ref = avg_pool2x2()(nn.functional.prelu(u, slopes))
    got = prelu_avgpool2x2(u.numpy(), slopes.numpy(), threads)
    assert got.shape == tuple(ref.shape)
    assert np.array_equal(got, ref.numpy())


def test_buffer_pool_gives_each_thread_its_own_buffers():
    """Batches side by side on worker threads never write into each other's buffers."""
    pool = BufferPool()
    here = pool.get("out", (2, 3))
    del here  # released: this thread would get it back
    with ThreadPoolExecutor(1) as ex:
        there = ex.submit(pool.get, "out", (2, 3)).result()
    again = pool.get("out", (2, 3))
    assert not np.shares_memory(again, there)


def test_buffer_pool_reuses_only_released_buffers():
    pool = BufferPool()
    first = pool.get("out", (2, 3))
    first[:] = 1.0
    kept = torch.from_numpy(first)[:, 1:]  # a derived view keeps the buffer in use
    del first
    second = pool.get("out", (2, 3))
    assert not np.shares_memory(second, kept.numpy())
    second[:] = 2.0
    third = pool.get("out", (2, 3))  # both kept ones in use: a fresh array
    third[:] = 3.0
    assert (kept == 1.0).all() and (second == 2.0).all()
    del kept
    again = pool.get("out", (2, 3))  # the first buffer is free again (what was written stays)
    assert (again == 1.0).all() and not np.shares_memory(again, second)
    assert pool.get("out", (4, 3)).shape == (4, 3)  # a new shape replaces the key's buffers
    assert len(pool._slots[(threading.get_ident(), "out")][1]) == 1


def _forward_with_links(packed, x: torch.Tensor, linked: bool) -> torch.Tensor:
    if linked:
        link_fused_modules(packed.model)
    else:
        for m in packed.model.modules():
            if isinstance(m, FusedInfoRCPModule):
                m._next = None
    with torch.inference_mode():
        return packed(x)


@pytest.mark.parametrize("name,width,size", [("bnext18", 0.25, 16), ("bnext18", 0.2, 20), ("bnext_t", 0.25, 16)])
def test_handed_bits_equal_packing_the_output(name, width, size):
    """A module that packs its output for the next module's conv writes exactly the bits that conv would pack:
    the logits are identical with and without the hand-over (odd sizes and channel counts included)."""
    model = zoo_model(name, width, input_size=size)
    packed = pack(model, fuse_float=True)
    x = torch.randn(6, 3, size, size, generator=torch.Generator().manual_seed(4))
    used = []
    handles = [m.register_forward_pre_hook(lambda mod, args: used.append(bool(mod.__dict__.get("_handed"))))
               for m in packed.model.modules() if isinstance(m, FusedInfoRCPModule)]
    linked = _forward_with_links(packed, x, linked=True)
    for h in handles:
        h.remove()
    assert sum(used) >= len(used) // 2  # most modules received their input bits from the previous one
    assert torch.equal(linked, _forward_with_links(packed, x, linked=False))
    assert torch.equal(linked, _forward_with_links(packed, x, linked=True))
    repack_(packed, model)  # links a consumer refused (BNext-T's second pointwise module) stay off
    unlinked = [m for m in packed.model.modules() if m.__dict__.get("_unlinked")]
    assert all(m._next is None for m in unlinked) and (name != "bnext_t" or unlinked)


def test_outputs_kept_by_the_caller_are_not_overwritten():
    model = zoo_model("bnext18", 0.25)
    packed = pack(model, fuse_float=True)
    fused = [m for m in packed.model.modules() if isinstance(m, FusedInfoRCPModule)]
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = fused[3].register_forward_hook(lambda mod, args, out: kept.append((out, out.clone())))
    g = torch.Generator().manual_seed(7)
    with torch.inference_mode():
        for _ in range(3):
            packed(torch.randn(4, 3, 16, 16, generator=g))
    handle.remove()
    assert len(kept) == 3
    for out, copy in kept:
        assert torch.equal(out, copy)
    assert not torch.equal(kept[0][0], kept[1][0])


def test_non_standard_se_runs_between_the_passes():
    """An SE the numba call cannot run (here a Hardsigmoid gate) runs as torch modules between pass A and B."""
    model = variant("bnext18", 0.25, {})
    for m in model.modules():
        if isinstance(m, InfoRCPModule):
            m.se.gate = nn.Hardsigmoid()
    packed = pack(model, fuse_float=True)
    fused = [m for m in packed.model.modules() if isinstance(m, FusedInfoRCPModule)]
    assert fused and not any(m._consts["se_numba"] for m in fused)
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        ref, got = model(x), packed(x)
    assert float((ref - got).abs().max()) <= 1e-3 * max(1.0, float(ref.abs().max()))


def test_repack_refreshes_the_constants():
    model = zoo_model("bnext18", 0.25)
    packed = pack(model, fuse_float=True)
    before = {id(m): m._consts["a"].copy() for m in packed.model.modules() if isinstance(m, FusedInfoRCPModule)}
    other = zoo_model("bnext18", 0.25, seed=5)
    repack_(packed, other)
    after = [m for m in packed.model.modules() if isinstance(m, FusedInfoRCPModule)]
    assert all(not np.array_equal(before[id(m)], m._consts["a"]) for m in after)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        ref, got = other(x), packed(x)
    assert float((ref - got).abs().max()) <= 1e-3 * max(1.0, float(ref.abs().max()))


def test_profile_accounts_for_the_pieces():
    from bnext.packed.fused_profile import profile

    total, parts = profile("bnext18", width=0.25, samples=16, batch=8, repeats=1)
    assert total > 0 and sum(parts.values()) <= total * 1.01
    assert parts["packed binary convs"] > 0
    assert any(k.startswith("fused float passes") for k in parts)
    _, unfused = profile("bnext18", width=0.25, samples=16, batch=8, repeats=1, fused=False)
    assert not any(k.startswith("fused float passes") for k in unfused)
