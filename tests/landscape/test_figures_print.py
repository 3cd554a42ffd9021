"""Figures a paper can use as they come: log levels where a surface spans decades, print-size fonts
(``width`` in inches), A/B and the extrapolated parts on interpolation plots, epochs on PCA paths."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.figures import plot, style
from landscape.store import SurfaceWriter, read_surface

X = np.linspace(-1, 1, 7)


def _capture(monkeypatch):
    figures = []
    real = style.save
    monkeypatch.setattr(style, "save", lambda fig, out, formats=None, dpi=style.DEFAULT_DPI:
                        (figures.append(fig), real(fig, out, formats, dpi))[1])
    return figures


def _plane(path, spread: float, steps=None):
    info = {"normalization": "none", "explained_variance_ratio": [0.8, 0.1]}
    if steps is not None:
        info["trajectory_steps"] = steps
    with SurfaceWriter.open(path, settings={"direction_kind": "pca"}, xcoordinates=X, ycoordinates=X,
                            directions={"x": {}, "y": {}}, direction_info=info,
                            trajectory=np.array([[0.9, 0.8], [0.5, 0.3], [0.2, 0.1], [0.0, 0.0]])) as w:
        w.write([((i, j), {"train_loss": 0.01 * spread ** (X[i] ** 2 + X[j] ** 2)})
                 for i in range(7) for j in range(7)])
    return read_surface(path)


def test_spans_decades_rule():
    assert not style.spans_decades(np.array([1.0, 50.0]))
    assert style.spans_decades(np.array([1.0, 1000.0, np.nan]))
    assert not style.spans_decades(np.array([0.0, 1000.0]))  # not positive: no log scale
    assert style.spans_decades([np.array([1.0, 2.0]), np.array([500.0])])


def test_contour_levels_are_log_when_the_surface_spans_decades(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    wide, narrow = _plane(tmp_path / "w.h5", 1e4), _plane(tmp_path / "n.h5", 2.0)
    plot.plot_contour(wide, tmp_path / "w.png")
    plot.plot_contour(narrow, tmp_path / "n.png")
    assert "log10" in figures[0].axes[0].get_title() and "log10" not in figures[1].axes[0].get_title()
    plot.plot_contour(narrow, tmp_path / "n2.png", log=True)  # an explicit choice wins
    assert "log10" in figures[2].axes[0].get_title()


@pytest.mark.parametrize("width", [style.SINGLE_COLUMN, style.DOUBLE_COLUMN])
def test_width_is_the_printed_width_and_ticks_stay_readable(tmp_path, monkeypatch, width):
    figures = _capture(monkeypatch)
    plot.plot_contour(_plane(tmp_path / "s.h5", 10.0), tmp_path / "s.png", width=width)
    fig = figures[0]
    assert fig.get_size_inches()[0] == pytest.approx(width)
    sizes = [t.get_fontsize() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert sizes and min(sizes) >= 7  # points on paper: the figure is drawn at its printed size


def test_pca_trajectory_is_labelled_with_its_epochs(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    plot.plot_contour(_plane(tmp_path / "s.h5", 10.0, steps=[1.0, 4.0, 7.0, 10.0]), tmp_path / "s.png")
    texts = [t.get_text() for t in figures[0].axes[0].texts]
    assert "epoch 1" in texts and "10" in texts
    assert "start" in [h.get_label() for h in figures[0].axes[0].get_legend().legend_handles]


def test_interpolation_plot_marks_a_b_and_the_extrapolated_parts(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    x = np.linspace(-0.5, 1.5, 9)
    with SurfaceWriter.open(tmp_path / "i.h5", settings={"direction_kind": "interpolate"}, xcoordinates=x,
                            ycoordinates=None, directions={"x": {}}) as w:
        w.write([((i,), {"train_loss": 1 + (x[i] - 0.5) ** 2, "train_acc": 90 - 10 * x[i] ** 2}) for i in range(9)])
    plot.plot_1d(read_surface(tmp_path / "i.h5"), tmp_path / "i.png")
    fig = figures[0]
    ax = fig.axes[0]
    assert {"A", "B"} <= {t.get_text() for t in ax.texts}
    shaded = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.9, 0.9, 0.9))]
    assert len(shaded) == 2  # x < 0 and x > 1
    assert not ax.get_legend() and fig.legends  # the legend sits below the axes, covering no curve
    assert "extrapolated" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_progress_shows_no_eta_until_the_first_point_is_done():
    import io

    from tqdm import tqdm

    from landscape.surface import FIRST_POINT_FORMAT, _first_done

    bar = tqdm(total=10, file=io.StringIO(), bar_format=FIRST_POINT_FORMAT, unit="pt")
    assert "first point" in str(bar) and "<" not in str(bar) and "pt/s" not in str(bar)
    bar.update(1)
    _first_done(bar)
    bar.update(1)
    text = str(bar)
    assert "first point" not in text and "<" in text  # an ETA from the points after the set-up
    assert bar.initial == 1
    bar.close()
