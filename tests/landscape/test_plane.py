"""The plane through three models (``--directions plane``): where A, B and C land, BN recalibrated by default."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.bn import recalibrate_bn
from landscape.directions import plane_directions
from landscape.engine import SurfaceEngine
from landscape.store import read_surface
from landscape.surface import compute_surface

from ._models import make_data, make_model


def _loss(model, data):
    with torch.no_grad():
        z = model(data[0]).double()
    return F.cross_entropy(z, data[1]).item()


@pytest.fixture
def three():
    return make_model("cnn", seed=0), make_model("cnn", seed=5), make_model("cnn", seed=7)


def test_li_plane_puts_the_models_at_unit_coordinates(three, tmp_path):
    a, b, c = three
    data = {"train": make_data(32, seed=1)}
    d = plane_directions(a, b, c)
    assert d.info["anchors"] == {"A": [0.0, 0.0], "B": [1.0, 0.0], "C": [0.0, 1.0]}
    assert "not orthogonalized" in d.info["axes"] and abs(d.info["cosine_xy"]) > 0
    # BN statistics move with the weights (bn="interpolate"): the corners reproduce the three models exactly
    path = compute_surface(tmp_path / "p.h5", a, d, data, "0:1:2", "0:1:2", bn="interpolate", progress=False,
                           exact=True)
    s = read_surface(path)
    for model, (i, j) in ((a, (0, 0)), (b, (1, 0)), (c, (0, 1))):
        assert s.values["train_loss"][i, j] == pytest.approx(_loss(model, data["train"]), rel=1e-5)
    assert s.direction_info["anchors"]["C"] == [0.0, 1.0]
    assert s.settings["direction_kind"] == "plane"


def test_orthogonal_plane_hits_c_where_stated(three):
    a, b, c = three
    data = {"train": make_data(32, seed=1)}
    d = plane_directions(a, b, c, orthogonalize=True)
    cx, cy = d.info["anchors"]["C"]
    assert cy == 1.0 and abs(d.cosine()) < 1e-6  # orthogonal axes
    with SurfaceEngine(a, d, data, exact=True) as eng:
        at_b, at_c = eng.evaluate(1.0, 0.0), eng.evaluate(cx, 1.0)
    assert at_b["train_loss"] == pytest.approx(_loss(b, data["train"]), rel=1e-5)
    assert at_c["train_loss"] == pytest.approx(_loss(c, data["train"]), rel=1e-5)
    # the hand computation of C's first coordinate: <C - A, B - A> / |B - A|^2
    ta, tb, tc = (torch.cat([t.detach().reshape(-1).double() for t in m.state_dict().values()
                             if t.is_floating_point()]) for m in three)
    assert cx == pytest.approx(float((tc - ta) @ (tb - ta) / ((tb - ta) @ (tb - ta))), rel=1e-6)


def test_plane_recalibrates_bn_by_default(three, tmp_path):
    a, b, c = three
    data = {"train": make_data(32, seed=1)}
    path = compute_surface(tmp_path / "r.h5", a, plane_directions(a, b, c), data, "0:1:2", "0:1:2",
                           progress=False, exact=True)
    s = read_surface(path)
    assert s.settings["bn"] == "recalibrate"
    ref = copy.deepcopy(b)
    recalibrate_bn(ref, data["train"][0], 128)
    ref.eval()
    assert s.values["train_loss"][1, 0] == pytest.approx(_loss(ref, data["train"]), rel=1e-5)
    assert not np.isclose(s.values["train_loss"][1, 0], _loss(b, data["train"]), rtol=1e-4)


def test_degenerate_planes_are_refused(three):
    a, b, _ = three
    with pytest.raises(ValueError, match="identical"):
        plane_directions(a, copy.deepcopy(a), b)
    with pytest.raises(ValueError, match="one line"):
        plane_directions(a, b, copy.deepcopy(b), orthogonalize=True)
