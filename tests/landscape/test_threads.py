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


def test_worker_torch_calls_are_single_threaded_after_set_num_threads_with_another_openmp_loaded():
    """Two regressions that left every worker with a team of two: scikit-learn's own libgomp (loaded by the
    digits data set) was the runtime told to use one thread, and ATen's once-per-thread set-up reset the
    team size to ``torch.set_num_threads``'s at the worker's first torch call."""
    import sklearn.datasets  # noqa: F401  (its libgomp in the process, as in every digits run)

    from landscape.threads import omp_set_num_threads

    omp_set_num_threads.cache_clear()
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x, w = torch.randn(8, 16, 16, 16), torch.randn(16, 16, 3, 3)

        def team(_):
            torch.conv2d(x, w)
            return torch.get_num_threads()

        assert run_ordered(team, range(4), workers=2, name="test-team-size") == [1] * 4
        assert torch.get_num_threads() == 2  # the calling thread keeps its own
    finally:
        torch.set_num_threads(old)
