"""The on-disk orientation follows the reference tool's reading convention (Li et al.'s plot_2D.py)."""

import h5py
import numpy as np

from landscape.directions import random_directions
from landscape.store import read_surface
from landscape.surface import compute_surface

from ._models import reference_loss


def test_non_square_surface_matches_the_reference_reading_convention(cnn, data, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = random_directions(cnn, seed=3)
    path = compute_surface(tmp_path / "s.h5", cnn, d, {"train": data["train"]}, "-1:1:5", "0:0.6:3", progress=False)
    with h5py.File(path) as f:  # read the raw datasets as their scripts do
        x, y = f["xcoordinates"][()], f["ycoordinates"][()]
        z = f["train_loss"][()]
        assert f.attrs["format_version"] == 2 and f["done"].shape == (3, 5)
    assert z.shape == (len(y), len(x)) == (3, 5)
    for i in (0, 1, 4):
        for j in (0, 2):
            loss, _ = reference_loss(cnn, d, x[i], y[j], data["train"])
            assert abs(z[j, i] - loss) < 1e-5, (i, j)
    xs, ys = np.meshgrid(x, y)  # plot_2D.py: X, Y = np.meshgrid(x, y); contour(X, Y, Z)
    fig, ax = plt.subplots()
    ax.contour(xs, ys, z)  # the wrong orientation raises for a non-square grid
    plt.close(fig)
    np.testing.assert_array_equal(xs[0], x)
    # the in-memory API is unchanged: values[k][i, j] is the value at (x[i], y[j])
    s = read_surface(path)
    np.testing.assert_array_equal(s.values["train_loss"], z.T)
    assert s.values["train_loss"].shape == (5, 3) and s.done.shape == (5, 3) and s.complete
