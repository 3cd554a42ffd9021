"""Directions: normalization rules, seeding, interpolation, PCA, reference-tool files."""

import h5py
import numpy as np
import pytest
import torch

from landscape.directions import (
    interpolation_direction,
    load_trajectory,
    normalize_direction,
    pca_directions,
    plane_directions,
    random_directions,
    read_reference,
    write_reference,
)
from landscape.engine import SurfaceEngine

from ._models import make_model, reference_loss


def test_filter_normalization_matches_filter_norms(cnn):
    d = random_directions(cnn, seed=3, normalization="filter", bias_bn="ignore")
    for name, p in cnn.named_parameters():
        if p.dim() > 1:
            dn = d.x[name].reshape(p.shape[0], -1).norm(dim=1)
            wn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(dn, wn, rtol=1e-5, atol=1e-6)
        else:  # biases and BN gamma/beta ignored
            assert not d.x[name].any() and not d.y[name].any()
    # BN running statistics are buffers, never part of random directions
    assert not any("running" in n for n in d.names)
    assert abs(d.info["cosine_xy"]) < 0.5


def test_layer_none_and_bias_filter(cnn):
    lay = random_directions(cnn, seed=3, normalization="layer", bias_bn="filter")
    raw = random_directions(cnn, seed=3, normalization="none", bias_bn="filter")
    fil = random_directions(cnn, seed=3, normalization="filter", bias_bn="filter")
    for name, p in cnn.named_parameters():
        torch.testing.assert_close(lay.x[name].norm(), p.detach().norm(), rtol=1e-5, atol=1e-6)
        if p.dim() == 1:  # a 1-D tensor is one "filter": whole-vector norm, not element-wise
            torch.testing.assert_close(fil.x[name].norm(), p.detach().norm(), rtol=1e-5, atol=1e-6)
            assert not torch.allclose(fil.x[name].abs(), p.detach().abs())
    # same seed, same Gaussian draw regardless of the rules
    ratio = lay.x["fc.weight"] / raw.x["fc.weight"]
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.flatten()[0])))
    a = random_directions(cnn, seed=3)
    b = random_directions(cnn, seed=3)
    c = random_directions(cnn, seed=4)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    with pytest.raises(ValueError, match="normalization"):
        random_directions(cnn, normalization="model")
    with pytest.raises(ValueError, match="ignore rule"):
        random_directions(cnn, bias_bn="keep")


def test_normalize_direction_zero_weights():
    d = normalize_direction(torch.ones(4, 2), torch.zeros(4, 2), "filter")
    assert not d.any()


def test_interpolation_endpoints_reproduce_both_models(data):
    a, b = make_model("cnn", seed=0), make_model("cnn", seed=5)
    d = interpolation_direction(a, b)
    assert d.ndim == 1 and "stem.1.running_mean" in d.names
    with SurfaceEngine(a, d, {"train": data["train"]}) as eng:
        r0, r1 = eng.evaluate(0.0), eng.evaluate(1.0)
    for model, r in ((a, r0), (b, r1)):
        loss, acc = reference_loss(model, d.__class__({}, None), 0, 0, data["train"])
        assert abs(r["train_loss"] - loss) < 1e-5 and abs(r["train_acc"] - acc) < 1e-9
    p = plane_directions(a, b, make_model("cnn", seed=7))
    assert p.ndim == 2


def test_reference_file_roundtrip(cnn, tmp_path):
    d = random_directions(cnn, seed=1)
    path = write_reference(d, tmp_path / "dirs.h5", cnn)
    with h5py.File(path) as f:
        assert sorted(f) == ["xdirection", "ydirection"]
        assert len(f["xdirection"]) == len(list(cnn.parameters()))
        np.testing.assert_array_equal(f["xdirection"]["0"][()], d.x["stem.0.weight"].numpy())
    back = read_reference(path, cnn)
    assert back.fingerprint() == d.fingerprint()
    # a "states" file: one dataset per state_dict entry
    states = tmp_path / "states.h5"
    with h5py.File(states, "w") as f:
        g = f.create_group("xdirection")
        for i, t in enumerate(cnn.state_dict().values()):
            g[str(i)] = np.ones(tuple(t.shape), np.float32) if t.is_floating_point() else np.zeros(t.shape)
    s = read_reference(states, cnn)
    assert s.ndim == 1 and "stem.1.running_var" in s.names and "stem.1.num_batches_tracked" not in s.names
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.create_group("xdirection")["0"] = np.zeros(3)
    with pytest.raises(ValueError, match="datasets; the model has"):
        read_reference(bad, cnn)


def _trajectory(cnn, t=8):
    g = torch.Generator().manual_seed(0)
    u = {n: torch.randn(p.shape, generator=g) for n, p in cnn.named_parameters()}
    v = {n: torch.randn(p.shape, generator=g) for n, p in cnn.named_parameters()}
    series = {}
    for n, p in cnn.named_parameters():
        keep = p.dim() > 1
        steps = [
            p.detach() + (3.0 * (t - 1 - k) * u[n] + 0.5 * np.sin(k) * (k < t - 1) * v[n]) * keep
            for k in range(t)
        ]
        series[n] = torch.stack(steps).numpy()
    return series, u, v


def test_pca_recovers_dominant_motion(cnn, tmp_path):
    series, u, _ = _trajectory(cnn)
    path = tmp_path / "traj.h5"
    with h5py.File(path, "w") as f:
        for n, arr in series.items():
            f[f"params/{n}"] = arr
        f["epochs"] = np.arange(8)
    steps, loaded = load_trajectory(path)
    assert steps.tolist() == list(range(8)) and set(loaded) == set(series)
    d = pca_directions(path, cnn)
    assert d.kind == "pca" and d.ndim == 2
    flat = lambda dd: torch.cat([dd[n].reshape(-1) for n in dd])  # noqa: E731
    ux = flat({n: u[n] * (cnn.get_parameter(n).dim() > 1) for n in u})
    cos = float(flat(d.x) @ ux / ux.norm())
    assert abs(cos) > 0.99
    assert abs(float(flat(d.x) @ flat(d.y))) < 1e-5
    traj = np.asarray(d.info["trajectory"])
    assert traj.shape == (8, 2) and np.allclose(traj[-1], 0, atol=1e-4)  # final snapshot = centre
    assert d.info["explained_variance_ratio"][0] > 0.9


def test_flat_trajectory_layout(cnn, tmp_path):
    import json

    series, _, _ = _trajectory(cnn, t=4)
    names = list(series)
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("weights", data=np.concatenate([series[n].reshape(4, -1) for n in names], 1))
        ds.attrs["names"] = json.dumps(names)
        ds.attrs["shapes"] = json.dumps([list(series[n].shape[1:]) for n in names])
    _, loaded = load_trajectory(path)
    for n in names:
        np.testing.assert_array_equal(loaded[n], series[n])
    with pytest.raises(ValueError, match="not an HDF5"):
        load_trajectory(tmp_path / "none.h5")
