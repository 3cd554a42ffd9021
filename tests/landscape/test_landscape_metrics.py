"""Smoothness metrics on analytic surfaces."""

import numpy as np
import pytest

from landscape import metrics

X = np.linspace(-1, 1, 21)
Y = np.linspace(-0.5, 1.5, 17)
XX, YY = np.meshgrid(X, Y, indexing="ij")


def test_roughness():
    assert metrics.roughness(2 * XX + YY + 1) == pytest.approx(0, abs=1e-12)
    smooth = metrics.roughness(XX**2 + YY**2)
    rng = np.random.default_rng(0)
    rough = metrics.roughness(XX**2 + YY**2 + 0.2 * rng.standard_normal(XX.shape))
    assert 0 < smooth < rough
    stairs = np.floor(4 * (XX**2 + YY**2)) / 4  # a binary-network-like staircase
    assert metrics.roughness(stairs) > smooth
    with_nan = XX**2 + YY**2
    with_nan[3, 3] = np.nan
    assert np.isfinite(metrics.roughness(with_nan))
    assert np.isnan(metrics.roughness(np.ones((2, 5))))


def test_convexity_share():
    assert metrics.convexity_share(XX**2 + 2 * YY**2, X, Y) == 1.0
    assert metrics.convexity_share(XX**2 - YY**2, X, Y) == 0.0  # saddle: ratio -1
    assert metrics.convexity_share(XX**2 - 0.05 * YY**2, X, Y) == 1.0  # ratio -0.05 > -0.1
    assert metrics.convexity_share(-(XX**2) - YY**2, X, Y) == 0.0  # concave
    assert metrics.convexity_share(np.zeros_like(XX), X, Y) == 1.0  # flat plateau
    half = np.where(XX < 0, XX**2 + YY**2, XX**2 - YY**2)
    assert 0.3 < metrics.convexity_share(half, X, Y) < 0.7
    assert metrics.convexity_share(X**2, X) == 1.0 and metrics.convexity_share(-(X**2), X) == 0.0
    lmin, lmax = metrics.hessian_eigenvalues(3 * XX**2 + YY**2, X, Y)
    np.testing.assert_allclose(lmax, 6, rtol=1e-9)
    np.testing.assert_allclose(lmin, 2, rtol=1e-9)


def test_basin_width():
    f = XX**2 + 4 * YY**2  # f <= 0.25 for |x| <= 0.5 and |y| <= 0.25
    b = metrics.basin(f, X, Y, delta=0.25)
    assert b["basin_threshold"] == 0.25
    assert b["basin_width_x"] == pytest.approx(1.0, abs=0.02)
    assert b["basin_width_y"] == pytest.approx(0.5, abs=0.03)
    assert b["basin_area"] == pytest.approx(np.pi * 0.5 * 0.25, rel=0.15)  # ellipse
    assert not b["basin_truncated"]
    wide = metrics.basin(f, X, Y, delta=10)
    assert wide["basin_truncated"] and wide["basin_width_x"] == pytest.approx(2.0)
    line = metrics.basin(X**2, X, delta=0.04)
    assert line["basin_width_x"] == pytest.approx(0.4, abs=0.01) and not line["basin_truncated"]


def test_surface_metrics_and_storage(tmp_path):
    from landscape.store import SurfaceWriter, read_surface

    path = tmp_path / "s.h5"
    with SurfaceWriter.open(
        path, settings={}, xcoordinates=X, ycoordinates=Y, directions={"x": {}, "y": {}}
    ) as w:
        w.write(
            [
                ((i, j), {"train_loss": XX[i, j] ** 2 + YY[i, j] ** 2, "train_acc": 50.0})
                for i in range(len(X))
                for j in range(len(Y))
            ]
        )
    result = metrics.compute_and_store(path)
    assert list(result) == ["train_loss"]
    stored = read_surface(path).metrics["train_loss"]
    assert stored["convexity_share"] == result["train_loss"]["convexity_share"] == 1.0
    assert stored["roughness"] == pytest.approx(result["train_loss"]["roughness"])
