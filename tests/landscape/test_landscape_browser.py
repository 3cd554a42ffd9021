"""The exported interactive HTML figure, rendered by a real browser (headless Chromium, software WebGL).

``.ci/run`` installs Debian's ``chromium`` when it is missing; the test skips (saying so) only when
no Chromium binary exists on the machine.
"""

import shutil
import subprocess

import numpy as np
import pytest

from landscape.figures import plot
from landscape.store import SurfaceWriter, read_surface

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 900, 700


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on this machine (install it: apt-get install -y chromium; .ci/run does this)")


def _surface(path):
    x = np.linspace(-1, 1, 15)
    y = np.linspace(-1, 1, 13)
    with SurfaceWriter.open(path, settings={"model": {"name": "bnext18", "options": {"info_rcp": True,
                                                                                      "elm_attention": True}}},
                            xcoordinates=x, ycoordinates=y, directions={"x": {}, "y": {}},
                            direction_info={"normalization": "filter"}) as w:
        w.write([((i, j), {"train_loss": x[i] ** 2 + 2 * y[j] ** 2 + 0.3 * np.sin(4 * x[i]) + 0.5})
                 for i in range(len(x)) for j in range(len(y))])
    return read_surface(path)


def surface_drawn(img: np.ndarray) -> tuple[float, int]:
    """``(share of strongly coloured pixels, distinct colours)`` in the plot area of a screenshot.

    The plot area is the left three quarters below the title (the colour bar sits at the right);
    plotly's background and grid are pale grey-blue, the Viridis surface is saturated.
    """
    rgb = img[..., :3].astype(float)
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    h, w = rgb.shape[:2]
    area = rgb[int(0.12 * h): int(0.9 * h), int(0.05 * w): int(0.75 * w)]
    saturation = area.max(axis=2) - area.min(axis=2)
    colours = np.unique((area * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    return float((saturation > 0.25).mean()), len(colours)


@pytest.mark.slow
def test_html_surface_renders_in_chromium(tmp_path):
    browser = _browser()
    html = plot.plot_html(_surface(tmp_path / "s.h5"), tmp_path / "s_3d.html", log=True)
    text = html.read_text()
    assert "train loss (log10)" in text and "BNext-18 (Info-RCP + ELM)" in text  # titles, not paths
    assert "direction 1 (filter-normalized)" in text
    assert "<script src=" not in text  # plotly.js embedded: nothing to fetch
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu-sandbox", "--use-gl=angle",
           "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}",
           "--virtual-time-budget=15000", f"--screenshot={shot}", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert shot.exists(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[:2] == (HEIGHT, WIDTH)
    coloured, distinct = surface_drawn(img)
    # the WebGL surface is drawn (the same page without WebGL: ~1% coloured, ~240 colours)
    assert coloured > 0.05 and distinct > 1000, (coloured, distinct)
    # the same measure on the page without its surface (plot area painted background): fails
    blank = img.copy()
    blank[int(0.12 * HEIGHT): int(0.9 * HEIGHT), int(0.05 * WIDTH): int(0.75 * WIDTH), :3] = blank[5, 5, :3]
    assert surface_drawn(blank)[0] < 0.01
