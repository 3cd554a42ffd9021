"""Batches on single-threaded workers (landscape.threads): the same values as one thread, bf16 included."""

import contextlib
import copy

import pytest
import torch
from torch import nn

from landscape.directions import random_directions
from landscape.engine import SurfaceEngine
from landscape.objectives import make_objectives


class WideBlockNet(nn.Module):
    """Conv-BN-ReLU stem and one residual block of 32 channels (Winograd takes its 3x3 convs)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.c1, self.b1 = nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.head = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = torch.relu(self.b1(self.c1(x)))
        out = torch.relu(self.b2(self.c2(out)) + x)
        return self.head(out.mean((2, 3)))


@contextlib.contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = WideBlockNet().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    x, y = torch.randn(150, 3, 12, 12), torch.randint(0, 5, (150,))
    dirs = random_directions(model, seed=seed)
    return model, dirs, {"train": (x, y), "test": (x[:70] * 0.5, y[:70])}


def _values(n_threads: int, points, **kw):
    model, dirs, data = _setup()
    with threads(n_threads), SurfaceEngine(copy.deepcopy(model), dirs, data, batch_size=16, **kw) as e:
        return e.settings, [e.evaluate(*p) for p in points]


POINTS = [(0.0, 0.0), (0.4, -0.7), (-1.3, 0.9)]


def test_two_workers_give_the_values_of_one_thread_bit_for_bit():
    s2, two = _values(2, POINTS)
    s1, one = _values(1, POINTS)
    assert s2["batch_workers"] == 2 and s1["batch_workers"] == 1
    assert "winograd_f4x4_3x3" in s2["conv_algorithms"].values()  # the fast path really ran on the workers
    assert two == one


def test_bf16_autocast_is_entered_on_the_workers():
    _, two = _values(2, POINTS[:2], precision="bf16")
    _, one = _values(1, POINTS[:2], precision="bf16")
    _, fp32 = _values(1, POINTS[:2])
    assert two == one
    assert two != fp32  # bf16 did run on the workers (autocast is per thread)


def test_metrics_on_workers_equal_one_thread():
    objectives = make_objectives(loss="ce", metrics=["top5", "ece", "margin"])
    _, two = _values(2, POINTS[1:], objectives=objectives)
    _, one = _values(1, POINTS[1:], objectives=objectives)
    assert two == one and "train_top5" in two[0]


def test_exact_and_reference_paths_stay_on_the_calling_thread():
    s, _ = _values(2, POINTS[:1], exact=True)
    assert s["batch_workers"] == 1


def test_a_worker_failure_falls_back_to_the_reference_path():
    model, dirs, data = _setup()
    with threads(2), SurfaceEngine(copy.deepcopy(model), dirs, data, batch_size=16) as e:
        good = e.evaluate(0.2, 0.1)
        fast = e._forward

        def broken(xb):
            if xb.shape[0] < 16:  # the last batch of a split, on some worker
                raise RuntimeError("worker failure")
            return fast(xb)

        e._forward = broken
        with pytest.warns(UserWarning, match="fast path failed"):
            again = e.evaluate(0.2, 0.1)
        assert e.counters["fallback_points"] == 1
    for k in good:
        assert again[k] == pytest.approx(good[k], rel=1e-5, abs=1e-5)


def test_binary_model_margins_recorded_on_workers_equal_one_thread():
    """A binarizing model run as itself: its per-image binary margins (which pick the audited images) are
    recorded on the workers into the right rows, as on one thread."""
    from ._models import TinyBinaryNet, randomize_bn

    torch.manual_seed(3)
    model = randomize_bn(TinyBinaryNet(classes=5, c=8).eval(), seed=3)
    x, y = torch.randn(150, 3, 10, 10), torch.randint(0, 5, (150,))
    dirs = random_directions(model, seed=1)
    out = {}
    for n in (2, 1):
        with threads(n), SurfaceEngine(copy.deepcopy(model), dirs, {"train": (x, y)}, batch_size=16) as e:
            assert e.sign_sensitive and e.settings["batch_workers"] == n
            e.set_point(0.3, -0.2)
            with torch.inference_mode():
                vals, kept = e._measure(e._forward, keep=True)
            out[n] = (vals, kept["train"], kept["train/margin"], e.evaluate(0.3, -0.2))
    assert out[2][0] == out[1][0] and out[2][3] == out[1][3]
    assert torch.equal(out[2][1], out[1][1])
    margins = out[2][2]
    assert torch.isfinite(margins).all()  # every row was written (by whichever worker ran its batch)
    assert torch.equal(margins, out[1][2])
