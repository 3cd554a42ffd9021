"""The coarse-to-fine evaluation order and the completed-level lookup used by partial plots."""

import numpy as np
import pytest

from landscape.grid import coarse_to_fine, complete_level, level_indices


@pytest.mark.parametrize("shape", [(1,), (2,), (5,), (21,), (3, 2), (7, 4), (11, 11), (51, 3)])
def test_order_is_a_permutation_and_levels_nest(shape):
    order = coarse_to_fine(shape)
    assert sorted(order) == sorted(np.ndindex(*shape))
    # after each level's points, that level's sub-grid is complete
    done = np.zeros(shape, dtype=bool)
    levels = []
    for idx in order:
        done[idx] = True
        s = complete_level(done)
        levels.append(s)
    assert levels[-1] == 1
    seen = [s for s in levels if s is not None]
    assert seen == sorted(seen, reverse=True)  # the completed level only ever gets finer


def test_corners_first_and_levels():
    assert coarse_to_fine((5,)) == [(0,), (4,), (2,), (1,), (3,)]
    first = coarse_to_fine((9, 9))[:4]
    assert set(first) == {(0, 0), (0, 8), (8, 0), (8, 8)}
    assert level_indices(10, 4).tolist() == [0, 4, 8, 9]


def test_complete_level_of_a_partial_grid():
    done = np.zeros((9, 9), dtype=bool)
    assert complete_level(done) is None
    done[np.ix_([0, 2, 4, 6, 8], [0, 2, 4, 6, 8])] = True
    assert complete_level(done) == 2
    done[1, 1] = True
    assert complete_level(done) == 2
    done[:] = True
    assert complete_level(done) == 1
