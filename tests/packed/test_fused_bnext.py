"""Fused float parts of packed BNext modules (bnext.packed.fused_bnext) against the unfused model.

Module by module the fused passes must equal the module's own torch forward up to float rounding
(the binary conv sees the same input); end to end the model keeps the tolerance contract of
``landscape.engine.TOLERANCE`` (rounding may flip a sign within rounding distance of 0).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bnext.models.bnext import InfoRCPModule
from bnext.packed import pack, repack_
from bnext.packed.forward import packed_forward_factory
from bnext.packed.fused_bnext import FusedInfoRCPModule
from landscape.engine import TOLERANCE

from .test_landscape_fastpath import zoo_model

VARIANTS = [
    ("bnext18", 0.25, {}),
    ("bnext18", 0.2, {"elm_attention": False}),
    ("bnext18", 0.25, {"info_rcp": False}),
    ("bnext_t", 0.25, {}),
    ("bnext_t", 0.2, {"info_rcp": False, "elm_attention": False}),
    ("bnext_t", 0.25, {"elm_attention": False}),
]


def variant(name: str, width: float, options: dict) -> torch.nn.Module:
    from bnext.models import create

    from .conftest import randomize

    base = zoo_model(name, width)  # BN statistics from train-mode forwards
    model = randomize(create(name, num_classes=10, input_size=16, width=width, **options), 0)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in base.state_dict().items() if k in own and v.shape == own[k].shape},
                          strict=False)
    return model.eval()


@pytest.mark.parametrize("name,width,options", VARIANTS)
def test_fused_modules_match_their_unfused_forward(name, width, options):
    model = variant(name, width, options)
    packed = pack(model, fuse_float=True)
    fused = [m for m in packed.model.modules() if isinstance(m, FusedInfoRCPModule)]
    assert fused and len(fused) == sum(type(m) is InfoRCPModule for m in model.modules())
    assert any(m.conv.stride == 2 for m in fused)  # strided blocks are fused too
    inputs: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args: inputs.__setitem__(id(mod), args[0].clone()))
               for m in fused]
    x = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    packed(x)
    for h in handles:
        h.remove()
    with torch.inference_mode():
        for m in fused:
            u = inputs[id(m)]
            ref = InfoRCPModule.forward(m, u)
            got = m(u)
            err = float((got - ref).abs().max())
            assert err <= 1e-5 * max(1.0, float(ref.abs().max())), (name, options, err)
    with torch.inference_mode():  # end to end: the tolerance contract against the float model
        y = torch.randint(0, 10, (12,), generator=torch.Generator().manual_seed(6))
        ref_logits, got_logits = model(x), packed(x)
    rel = abs(float(F.cross_entropy(got_logits, y)) / float(F.cross_entropy(ref_logits, y)) - 1)
    assert rel <= TOLERANCE["loss_rel"]
    agree = (got_logits.argmax(1) == ref_logits.argmax(1)).float().mean()
    assert agree >= 11 / 12


def test_repack_refreshes_fused_modules():
    model = zoo_model("bnext18", 0.25)
    packed = pack(model, fuse_float=True)
    other = zoo_model("bnext18", 0.25, seed=3)
    repack_(packed, other)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref, got = other(x), packed(x)
    assert float((ref - got).abs().max()) <= 1e-3 * max(1.0, float(ref.abs().max()))


def test_factory_fuses_unless_exact():
    model = zoo_model("bnext_t", 0.25)
    probe = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert packed_forward_factory(model, probe, required=True).info()["fused_float"] is True
    exact = packed_forward_factory(model, probe, required=True, exact=True)
    assert exact.info()["fused_float"] is False
    with torch.inference_mode():
        assert torch.equal(exact(model)(probe), model(probe))


def _recorded_without_offered_margins(packed, mods, x):
    """The recorder's own pass over every module input (the layers' ``input_margins`` switched off) and the
    logits of that forward."""
    from landscape.engine.audit import MarginRecorder

    for m in mods:
        m.input_margins = lambda u: None
    try:
        with MarginRecorder(mods, x.shape[0]) as rec, torch.inference_mode():
            return rec, packed(x)
    finally:
        for m in mods:
            del m.input_margins


def test_packed_conv_margins_from_the_packing_pass():
    """bireal18's packed convs: margins computed while packing equal the audit's own pass, and the forward
    that reuses the packed input gives the same logits."""
    from bnext.packed.layers import PackedBinaryConv2d
    from landscape.engine.audit import MarginRecorder

    packed = pack(zoo_model("bireal18", 0.25))
    convs = [m for m in packed.model.modules() if isinstance(m, PackedBinaryConv2d)]
    x = torch.randn(9, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    with MarginRecorder(convs, 9) as fast, torch.inference_mode():
        got = packed(x)
    assert not any(m.__dict__.get("_prepacked") for m in convs)  # each forward took its packed input
    slow, want = _recorded_without_offered_margins(packed, convs, x)
    assert torch.isfinite(fast.margins).all()
    assert torch.equal(fast.margins, slow.margins)
    assert torch.equal(got, want)


@pytest.mark.parametrize("name,width,options", [VARIANTS[0], VARIANTS[2], VARIANTS[3]])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_module_margins_from_the_packing_pass(name, width, options, threads):
    """Fused BNext modules: the audit's margins computed in the pass that packs the next module's input
    (or while packing the first module's input) equal the recorder's own pass over every module input,
    serial and parallel, and the forward gives the same logits with and without them."""
    from bnext.packed.layers import PackedBinaryConv2d
    from bnext.packed.threads import numba_get_threads, set_threads
    from landscape.engine.audit import MarginRecorder

    packed = pack(variant(name, width, options), fuse_float=True)
    mods = [m for m in packed.model.modules() if isinstance(m, FusedInfoRCPModule | PackedBinaryConv2d)]
    fused = [m for m in mods if isinstance(m, FusedInfoRCPModule)]
    x = torch.randn(9, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    before = numba_get_threads()
    set_threads(threads)
    packing = []  # fused modules that packed their input themselves (the first of a chain)
    for m in fused:
        m.conv.input_margins = lambda u, conv=m.conv: packing.append(conv) or PackedBinaryConv2d.input_margins(conv, u)
    try:
        with MarginRecorder(mods, 9) as fast, torch.inference_mode():
            got = packed(x)
        for m in fused:
            del m.conv.input_margins
        assert 1 <= len(packing) < len(fused) / 2  # the others' margins came from the previous module's pass B
        assert not any(m.__dict__.get("_handed") for m in fused)  # every handed-over packing was taken
        assert not any(m.conv.__dict__.get("_prepacked") for m in fused)
        assert not any(m.__dict__.get("_want_margins") for m in fused)  # asked only while recording
        slow, want = _recorded_without_offered_margins(packed, mods, x)
    finally:
        set_threads(before)
    assert torch.isfinite(fast.margins).all()
    assert torch.equal(fast.margins, slow.margins)
    assert torch.equal(got, want)


@pytest.mark.parametrize("shape", [(3, 70, 5, 7), (8, 64, 32, 32)])  # serial; parallel (>= PARALLEL_PACK_MIN)
def test_pack_input_margins_packs_the_same_bits(shape):
    import numpy as np

    from bnext.packed.bits import n_words
    from bnext.packed.packing import pack_input, pack_input_margins

    g = np.random.default_rng(1)
    x = g.standard_normal(shape).astype(np.float32)
    shift = g.standard_normal(shape[1]).astype(np.float32)
    n, c, h, w = shape
    a = np.zeros((n, h + 2, w + 2, n_words(c)), np.uint64)
    b = np.zeros_like(a)
    pack_input(x, shift, True, 1, a)
    margins = np.full(n, np.inf, np.float32)
    pack_input_margins(x, shift, True, 1, b, margins)
    assert np.array_equal(a, b)
    want = np.abs(x + shift[None, :, None, None]).reshape(n, -1).min(1)
    assert np.array_equal(margins, want)
