"""Figures, HTML, VTS and the comparison panel from synthetic surface files."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from landscape.figures import compare as cmp
from landscape.figures import plot, style
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
    for kind in plot.MATPLOTLIB_KINDS:  # PNG + PDF by default
        assert written[kind].suffix == ".png" and written[kind].with_suffix(".pdf").exists(), kind
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
    out, rows = cmp.compare(
        paths, tmp_path / "cmp" / "panel.png", labels=["a", "b", "c"], levels=plot.parse_levels("0:6:0.5"),
        formats=("png",),
    )
    assert out.exists() and _ink(out) > 0.05
    assert [r["label"] for r in rows] == ["a", "b", "c"]
    table = out.with_suffix(".md").read_text()
    assert "| a |" in table and "roughness" in table and out.with_suffix(".csv").exists()
    assert rows[0]["basin_width_x"] > rows[2]["basin_width_x"]  # flatter surface, wider basin
    assert "train_loss" in read_surface(paths[1]).metrics
    assert "roughness" in cmp.format_table(rows)
    with pytest.raises(ValueError, match="vmin:vmax:step"):
        plot.parse_levels("0:1")


# ----------------------------------------------------------------------------- the figure style
def _capture(monkeypatch):
    """Keep the figures that ``style.save`` is asked to write (and still write them)."""
    figures = []
    real = style.save

    def save(fig, out, formats=None, dpi=style.DEFAULT_DPI):
        figures.append(fig)
        return real(fig, out, formats, dpi)

    monkeypatch.setattr(style, "save", save)
    return figures


def _described(path, kind="pca", model=None):
    """A 2D surface with the metadata the compute command stores (model spec, direction kind, PCA ratios)."""
    info = {"normalization": "filter" if kind == "random" else "none"}
    if kind == "pca":
        info["explained_variance_ratio"] = [0.873, 0.051]
    spec = model or {"name": "bnext18", "options": {"width": 1.0, "info_rcp": True, "elm_attention": True}}
    settings = {"model": spec, "direction_kind": kind, "normalization": info["normalization"]}
    with SurfaceWriter.open(path, settings=settings,
                            xcoordinates=X, ycoordinates=Y, directions={"x": {}, "y": {}}, direction_info=info,
                            trajectory=np.array([[0.6, 0.9], [0.3, 0.4], [0.0, 0.0]]) if kind == "pca" else None) as w:
        w.write([((i, j), {"train_loss": X[i] ** 2 + (Y[j] - 0.2) ** 2 + 0.3}) for i in range(len(X))
                 for j in range(len(Y))])
    return path


def test_titles_labels_colour_bars_and_trajectory(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    path = _described(tmp_path / "pca.h5")
    written = plot.plot_all(path, kinds=["contour", "contourf", "heatmap", "3d"], log=True, formats=("png",))
    assert len(figures) == 4 and all(p.exists() for p in written.values())
    for fig in figures:
        texts = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
        assert any("BNext-18 (Info-RCP + ELM) \u2014 train loss (log10)" in t for t in texts), texts
        assert not any(str(tmp_path) in t or "pca.h5" in t for t in texts)  # no file paths
        main = fig.axes[0]
        assert main.get_xlabel() == "PC1 (87.3%)" and main.get_ylabel() == "PC2 (5.1%)"
        bars = [ax for ax in fig.axes[1:] if ax.get_ylabel() == "train loss (log10)"]
        assert len(bars) == 1, "every 2D and 3D figure has a labelled colour bar"
        ticks = [t for t in bars[0].get_yticks() if np.isfinite(t)]
        assert ticks and all(abs(t * 20 - round(t * 20)) < 1e-9 for t in ticks), ticks  # round numbers
    for fig in figures[:3]:  # the trajectory on every 2D figure of a PCA surface
        lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "training trajectory"]
        assert len(lines) == 1 and np.allclose(lines[0].get_xydata(), [[0.6, 0.9], [0.3, 0.4], [0.0, 0.0]])
    # 3D: the requested view and z range
    plot.plot_3d(read_surface(path), tmp_path / "v.png", zlim=(0.0, 1.0), elev=45, azim=10, formats=("png",))
    ax3 = figures[-1].axes[0]
    assert (ax3.elev, ax3.azim) == (45, 10) and tuple(ax3.get_zlim()) == (0.0, 1.0)


def test_axis_words_and_model_names():
    assert style.model_display_name({"name": "bnext18", "options": {"info_rcp": True, "elm_attention": False}}) \
        == "BNext-18 (Info-RCP only)"
    assert style.model_display_name({"name": "resnet18", "options": {"width": 0.25}}) == "ResNet-18 \u00d70.25"
    assert style.model_display_name(None) is None
    assert style.axis_labels("random", {"normalization": "filter"})[0] == "direction 1 (filter-normalized)"
    assert style.axis_labels("interpolate")[0].startswith("interpolation coefficient")
    assert style.axis_labels("pca", {"explained_variance_ratio": "[0.5, 0.25]"}) == ("PC1 (50.0%)", "PC2 (25.0%)")
    assert style.quantity_label("test_acc", False) == "test accuracy (%)"


def test_nice_levels_are_round_and_bracket_the_data():
    rng = np.random.default_rng(0)
    for lo, span in [(0.2876, 4.38), (6.072, 1.2), (-0.53, 1.2), (1e-4, 3e-3), (5.0, 0.0)]:
        z = lo + span * rng.random((7, 5))
        lv = style.nice_levels(z)
        step = np.diff(lv)
        assert np.allclose(step, step[0]) and 3 <= len(lv) <= 16, lv
        mantissa = step[0] / 10 ** np.floor(np.log10(step[0]))
        assert any(np.isclose(mantissa, m) for m in (1, 2, 2.5, 5)), step[0]
        assert np.allclose(lv / step[0], np.round(lv / step[0]))  # levels on multiples of the step
        assert lv[0] <= z.min() and lv[-1] >= z.max()
    with pytest.raises(ValueError, match="no finite"):
        style.nice_levels(np.full((2, 2), np.nan))


def test_formats_embed_fonts(tmp_path):
    path = _described(tmp_path / "r.h5", kind="random")
    first = plot.plot_contourf(read_surface(path), tmp_path / "f.png", formats=style.parse_formats("png,pdf,svg"))
    assert first == tmp_path / "f.png"
    pdf = (tmp_path / "f.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType embedded, text stays text
    svg = (tmp_path / "f.svg").read_text()
    assert "<text" in svg and "direction 1 (filter-normalized)" in svg
    with pytest.raises(ValueError, match="png, pdf, svg"):
        style.parse_formats("png,jpeg")


def test_partial_surface_is_drawn_at_its_complete_level(tmp_path, capsys, monkeypatch):
    from landscape.grid import coarse_to_fine

    n = 9
    xs = np.linspace(-1, 1, n)
    path = tmp_path / "part.h5"
    order = coarse_to_fine((n, n))
    with SurfaceWriter.open(path, settings={}, xcoordinates=xs, ycoordinates=xs, directions={"x": {}, "y": {}}) as w:
        w.write([((i, j), {"train_loss": xs[i] ** 2 + xs[j] ** 2 + 1}) for i, j in order[:30]])  # 5x5 level + 5
    part, note = plot.drawable(read_surface(path))
    assert part.shape == (5, 5) and np.allclose(part.xcoordinates, np.linspace(-1, 1, 5))
    assert np.isfinite(part.values["train_loss"]).all() and "30 of 81" in note and "5\u00d75" in note
    figures = _capture(monkeypatch)
    plot.plot_all(path, kinds=["contour"], formats=("png",))
    assert "30 of 81" in capsys.readouterr().out
    assert "partial" in figures[0].axes[0].get_title()
    assert read_surface(path).metrics["train_loss"]["partial_grid"] == "5\u00d75"
    with SurfaceWriter.open(tmp_path / "rows.h5", settings={}, xcoordinates=xs, ycoordinates=xs,
                            directions={"x": {}, "y": {}}) as w:  # filled row by row: no complete level
        w.write([((i, j), {"train_loss": xs[i] ** 2 + xs[j] ** 2 + 1}) for i in range(4) for j in range(n)])
    rows, note = plot.drawable(read_surface(tmp_path / "rows.h5"))
    assert rows.shape == (n, n) and "36 of 81" in note and "left blank" in note
    plot.plot_all(tmp_path / "rows.h5", kinds=["contourf"], formats=("png",))
    assert "partial" in figures[-1].axes[0].get_title()
    with SurfaceWriter.open(tmp_path / "none.h5", settings={}, xcoordinates=xs, ycoordinates=xs,
                            directions={"x": {}, "y": {}}):
        pass
    with pytest.raises(ValueError, match="no point computed yet"):
        plot.plot_all(tmp_path / "none.h5", kinds=["contour"], formats=("png",))


def test_plotly_titles_and_log_axis(tmp_path):
    s = read_surface(_described(tmp_path / "p.h5"))
    fig = plot.plotly_figure(s, log=True)
    assert fig.layout.scene.zaxis.title.text == "train loss (log10)"
    assert fig.layout.scene.xaxis.title.text == "PC1 (87.3%)"
    assert fig.layout.title.text == "BNext-18 (Info-RCP + ELM) \u2014 train loss (log10)"


def test_compare_panels_and_default_names(tmp_path, monkeypatch):
    a = _described(tmp_path / "a" / "landscape.h5")
    b = _described(tmp_path / "b" / "landscape.h5", model={"name": "resnet18", "options": {}})
    c = _described(tmp_path / "c.h5", kind="random")
    name_ab = cmp.default_output([a, b])
    assert name_ab.name == "a_vs_b_train_loss.png" and name_ab.parent.name == "compare"
    assert cmp.default_output([a, c]) != name_ab  # another comparison, another file
    long = cmp.default_output([tmp_path / f"surface_number_{k}.h5" for k in range(9)])
    assert len(long.name) < 120 and "_and_7_more_" in long.name
    figures = _capture(monkeypatch)
    cmp.compare([a, b], tmp_path / "out.png", formats=("png",))
    panels = [ax for ax in figures[0].axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["BNext-18 (Info-RCP + ELM)", "ResNet-18"]
    fig = figures[0]  # the same axes in every panel: one label per axis for the figure, none per panel
    assert fig._supxlabel.get_text() == "PC1 (87.3%)" and fig._supylabel.get_text() == "PC2 (5.1%)"
    assert not any(ax.get_xlabel() or ax.get_ylabel() for ax in panels)
    letters = [t.get_text() for ax in panels for t in ax.texts]
    assert "(a)" in letters and "(b)" in letters
