import math

from bnext.kd import assistant_index, order_by_kc


def test_assistant_index_follows_algorithm1():
    # floor(epoch / (epochs / n)), clipped: equal active time, increasing index
    for epochs, n in [(512, 3), (512, 2), (10, 3), (7, 2), (5, 5), (3, 4)]:
        idx = [assistant_index(e, epochs, n) for e in range(epochs)]
        assert idx == [min(math.floor(e / (epochs / n) + 1e-9), n - 1) for e in range(epochs)]
        assert idx == sorted(idx) and idx[0] == 0
    idx = [assistant_index(e, 512, 3) for e in range(512)]
    assert idx.index(1) == 171 and idx.index(2) == 342
    assert [idx.count(i) for i in range(3)] == [171, 171, 170]
    assert [assistant_index(e, 512, 2) for e in (0, 255, 256, 511)] == [0, 0, 1, 1]
    assert all(assistant_index(e, 8, 1) == 0 for e in range(8))
    assert assistant_index(3, 8, 0) == -1
    assert assistant_index(100, 8, 3) == 2  # clipped


def test_order_by_kc_increasing_and_stable():
    assert order_by_kc(["b4", "b0", "cnx"], [1.405, 0.893, 1.552]) == ["b0", "b4", "cnx"]
    assert order_by_kc(["x", "y"], [1.0, 1.0]) == ["x", "y"]
