"""landscape.threads: ordered results, single-threaded workers, no deadlock when a worker shares out work."""

import pytest
import torch

from landscape.threads import cpu_workers, in_worker, run_ordered


def test_results_in_item_order_and_equal_to_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(64, 64, generator=g) for _ in range(9)]
    want = [x @ x.T for x in xs]
    got = run_ordered(lambda x: x @ x.T, xs, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_workers_know_they_are_workers_and_do_not_share_out_again():
    assert not in_worker()
    seen = run_ordered(lambda _: (in_worker(), cpu_workers()), range(4), workers=2)
    assert seen == [(True, 1)] * 4
    # a worker calling run_ordered runs the items itself (a worker waiting on its own pool would hang)
    nested = run_ordered(lambda i: run_ordered(lambda j: i * 10 + j, range(3)), range(3), workers=2)
    assert nested == [[0, 1, 2], [10, 11, 12], [20, 21, 22]]


def test_the_first_error_is_raised_after_every_item_finished():
    done = []

    def fn(i):
        if i == 1:
            raise ValueError("item 1")
        done.append(i)
        return i

    with pytest.raises(ValueError, match="item 1"):
        run_ordered(fn, range(5), workers=2)
    assert sorted(done) == [0, 2, 3, 4]
