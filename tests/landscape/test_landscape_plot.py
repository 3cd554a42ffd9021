"""Figures, HTML, VTS and the comparison panel from synthetic surface files."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from landscape import plot
from landscape.store import SurfaceWriter, read_surface

X = np.linspace(-1, 1, 9)
Y = np.linspace(-0.5, 1.5, 6)  # non-square, asymmetric


def _surface(path, scale=1.0, y=Y):
    with SurfaceWriter.open(
        path,
        settings={"scale": scale},
        xcoordinates=X,
        ycoordinates=y,
        directions={"x": {}, "y": {}},
        trajectory=np.array([[0.5, 0.5], [0.0, 0.0]]),
    ) as w:
        if y is None:
            w.write(
                [
                    ((i,), {"train_loss": scale * X[i] ** 2 + 0.1, "train_acc": 90 - 10 * X[i] ** 2})
                    for i in range(len(X))
                ]
            )
        else:
            w.write(
                [
                    (
                        (i, j),
                        {
                            "train_loss": scale * (X[i] ** 2 + 2 * (Y[j] - 0.2) ** 2) + X[i] + 0.1,
                            "train_acc": 50.0,
                            "test_loss": X[i] ** 2 + Y[j] ** 2,
                        },
                    )
                    for i in range(len(X))
                    for j in range(len(Y))
                ]
            )
    return path


def _ink(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)[..., :3]
    return float((img.mean(axis=2) < 0.9).mean())


def test_plot_all_kinds(tmp_path, capsys):
    path = _surface(tmp_path / "surf.h5")
    written = plot.plot_all(path)
    assert set(written) == set(plot.KINDS)
    for kind, out in written.items():
        assert out.exists() and out.stat().st_size > 0, kind
    assert _ink(written["3d"]) > 0.05  # the 3D axes are not blank (Axes3D(fig) bug)
    assert _ink(written["contour"]) > 0.01
    html = written["html"].read_text()
    assert "plotly" in html and len(html) > 1_000_000  # plotly.js embedded: opens offline
    assert written["plotly_png"] == written["3d"]  # no kaleido here: matplotlib fallback
    assert "kaleido" in capsys.readouterr().out
    assert "train_loss" in read_surface(path).metrics


def test_plotly_orientation(tmp_path):
    s = read_surface(_surface(tmp_path / "s.h5"))
    fig = plot.plotly_figure(s)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (len(Y), len(X))
    assert z[4, 2] == s.values["train_loss"][2, 4]


def test_vts_layout(tmp_path):
    s = read_surface(_surface(tmp_path / "s.h5"))
    out = plot.write_vts(s, tmp_path / "s.vts")
    root = ET.parse(out).getroot()
    grid = root.find("StructuredGrid")
    assert grid.get("WholeExtent") == f"0 {len(X) - 1} 0 {len(Y) - 1} 0 0"
    pts = np.array(root.find(".//Points/DataArray").text.split(), float).reshape(-1, 3)
    assert pts.shape == (len(X) * len(Y), 3)
    i, j = 3, 5
    k = i + len(X) * j  # VTK: x fastest
    assert tuple(pts[k]) == (X[i], Y[j], s.values["train_loss"][i, j])
    names = [a.get("Name") for a in root.find(".//PointData")]
    assert names == ["train_loss", "train_acc", "test_loss"]


def test_one_dimensional_plot(tmp_path):
    path = _surface(tmp_path / "line.h5", y=None)
    written = plot.plot_all(path)
    assert list(written) == ["1d"] and written["1d"].exists()
    with pytest.raises(ValueError, match="needs a 2D surface"):
        plot.plot_contour(read_surface(path), tmp_path / "c.png")


def test_compare_panel_and_table(tmp_path):
    paths = [_surface(tmp_path / f"s{k}.h5", scale=s) for k, s in enumerate((0.5, 1.0, 3.0))]
    out, rows = plot.compare(
        paths, tmp_path / "cmp" / "panel.png", labels=["a", "b", "c"], levels=plot.parse_levels("0:6:0.5")
    )
    assert out.exists() and _ink(out) > 0.05
    assert [r["label"] for r in rows] == ["a", "b", "c"]
    table = out.with_suffix(".md").read_text()
    assert "| a |" in table and "roughness" in table and out.with_suffix(".csv").exists()
    assert rows[0]["basin_width_x"] > rows[2]["basin_width_x"]  # flatter surface, wider basin
    assert "train_loss" in read_surface(paths[1]).metrics
    assert "roughness" in plot.format_table(rows)
    with pytest.raises(ValueError, match="vmin:vmax:step"):
        plot.parse_levels("0:1")
