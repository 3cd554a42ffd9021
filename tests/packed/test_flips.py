"""Sign flips on the packed engine (bnext.packed.flips): bits toggled in the packed words equal a repacked model
with those signs flipped; 0 % flipped is the trained model and 100 % the model with every binary weight negated."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnext.nn import binary_layers
from bnext.packed import pack
from bnext.packed.flips import BitFlipper, flip_metrics, flip_order, flip_sweep, summarize_seeds
from landscape.store import read_directions, read_surface

from .conftest import make_model

_MODELS: dict = {}


def model_and_packed(name: str = "bnext18"):
    if name not in _MODELS:  # packing is the slow part: one model per test session
        model = make_model(name, 16, 0.1, seed=4)
        _MODELS[name] = (model, pack(model, threads=1))
    return _MODELS[name]


def data(n: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


def loss_acc(forward, x, y):
    with torch.inference_mode():
        logits = forward(x).float()
    return float(torch.nn.functional.cross_entropy(logits, y)), 100.0 * float((logits.argmax(1) == y).float().mean())


@pytest.mark.slow  # packs a model per example (about 10 s on an idle 2-core machine)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), share=st.floats(0.0, 1.0),
       name=st.sampled_from(["bnext18", "xnornet18", "binarynet18"]))  # binarynet18: fused blocks (packed bits)
def test_flipping_bits_equals_repacking_with_flipped_signs(seed, share, name):
    model, packed = model_and_packed(name)
    flipper = BitFlipper(packed)
    rng = np.random.default_rng(seed)
    ref = copy.deepcopy(model)
    try:
        ref_layers = dict(binary_layers(ref))
        for lname, n in flipper.sizes().items():
            flat = rng.choice(n, size=int(share * n), replace=False)
            flipper.flip(lname, flat)
            with torch.no_grad():
                ref_layers[lname].weight.view(-1)[torch.from_numpy(flat)] *= -1
        repacked = pack(ref, threads=1)
        for (lname, got), (_, want) in zip(packed.packed_layers(), repacked.packed_layers(), strict=True):
            np.testing.assert_array_equal(got.wt, want.wt, err_msg=lname)
            np.testing.assert_array_equal(got.tapsum, want.tapsum, err_msg=lname)
        x = data(4, seed % 1000)[0]
        torch.testing.assert_close(packed(x), repacked(x), rtol=0, atol=0)
    finally:
        flipper.restore()
    x = data(4)[0]
    torch.testing.assert_close(packed(x), pack(model, threads=1)(x), rtol=0, atol=0)  # restored


def test_sweep_ends_are_the_model_and_the_negated_model(tmp_path):
    model, packed = model_and_packed()
    x, y = data(32, 1)
    layer = list(dict(binary_layers(model)))[1]
    runs = flip_sweep(tmp_path, model, packed, {"test": (x, y)}, scopes=("network", layer),
                      seeds=(0, 1), fractions=(0.0, 0.05, 0.5, 1.0), progress=False)
    assert [(r.scope, r.order, r.seed) for r in runs] == [
        ("network", "random", 0), ("network", "random", 1), ("network", "magnitude", 0),
        (layer, "random", 0), (layer, "random", 1), (layer, "magnitude", 0)]
    assert all(float(m.weight.detach().abs().min()) > 0 for _, m in binary_layers(model))  # so -w flips every sign
    loss0, acc0 = loss_acc(model.eval(), x, y)  # the torch (simulated) model
    negated = copy.deepcopy(model)
    one = copy.deepcopy(model)
    with torch.no_grad():
        for _, m in binary_layers(negated):
            m.weight.neg_()
        dict(binary_layers(one))[layer].weight.neg_()
    loss_all, acc_all = loss_acc(negated.eval(), x, y)
    loss_one, acc_one = loss_acc(one.eval(), x, y)
    for run in runs:
        s = read_surface(run.path)
        assert s.complete and s.settings["scope"] == run.scope
        assert s.values["test_loss"][0] == pytest.approx(loss0, rel=1e-5)
        assert s.values["test_acc"][0] == pytest.approx(acc0)
        end = (loss_all, acc_all) if run.scope == "network" else (loss_one, acc_one)
        assert s.values["test_loss"][-1] == pytest.approx(end[0], rel=1e-5)
        assert s.values["test_acc"][-1] == pytest.approx(end[1])
        assert s.metrics["flips"]["loss_at_1"] == pytest.approx(end[0], rel=1e-5)
    assert len({float(read_surface(r.path).values["test_loss"][2]) for r in runs[:3]}) == 3  # orders differ
    x0 = data(4)[0]
    torch.testing.assert_close(packed(x0), pack(model, threads=1)(x0), rtol=0, atol=0)  # signs restored


def test_sweep_resumes_and_stores_the_flip_thresholds(tmp_path):
    model, packed = model_and_packed()
    d = {"test": data(16, 2)}
    kw = dict(scopes=("network",), orders=("magnitude",), seeds=(0,), fractions=(0.0, 0.5, 1.0), progress=False)
    (run,) = flip_sweep(tmp_path, model, packed, d, **kw)
    before = read_surface(run.path).values["test_loss"].copy()
    (again,) = flip_sweep(tmp_path, model, packed, d, **kw)
    np.testing.assert_array_equal(read_surface(again.path).values["test_loss"], before)
    dirs = read_directions(run.path)["x"]
    mags = np.concatenate([m.weight.detach().abs().numpy().reshape(-1) for _, m in binary_layers(model)])
    thr = np.concatenate([dirs[f"{n}.weight"].reshape(-1) for n, _ in binary_layers(model)])
    assert thr.min() > 0 and thr.max() == 1.0
    order = np.argsort(thr, kind="stable")
    assert np.all(np.diff(mags[order]) >= 0)  # smallest |w| flips first


def test_orders_scopes_and_errors():
    sizes = {"a": 5, "b": 7}
    names, ids, flat = flip_order(sizes, "network", "random", 3)
    assert names == ["a", "b"] and sorted(zip(ids, flat)) == [(0, i) for i in range(5)] + [(1, i) for i in range(7)]
    mags = {"a": np.array([5, 1, 4, 1, 3.0]), "b": np.arange(7.0) + 0.5}
    _, ids, flat = flip_order(sizes, "a", "magnitude", 0, mags)
    assert list(flat[:2]) in ([1, 3], [3, 1]) and list(flat[2:]) == [4, 2, 0]
    with pytest.raises(ValueError, match="not a binary layer"):
        flip_order(sizes, "c", "random", 0)
    with pytest.raises(ValueError, match="flip order"):
        flip_order(sizes, "a", "largest", 0)


def test_metrics_and_seed_summary():
    f = np.array([0.0, 0.1, 0.2, 1.0])
    m = flip_metrics(f, np.array([90.0, 80.0, 40.0, 10.0]), np.array([0.3, 0.5, 1.0, 3.0]), chance=10.0)
    assert m["half_accuracy_fraction"] == pytest.approx(0.1 + 0.1 * (80 - 50) / 40)
    assert m["loss_at_1"] == 3.0 and 10 < m["accuracy_area"] < 90
    s = summarize_seeds([0.1, 0.2, 0.3])
    assert s["mean"] == pytest.approx(0.2) and s["std"] == pytest.approx(0.1) and s["ci"][0] < 0.2 < s["ci"][1]
    assert summarize_seeds([float("nan")])["n"] == 0
