from collections import Counter

import pytest

from bnext.data import RepeatedAugmentationSampler


def test_each_index_repeated_per_epoch():
    sampler = RepeatedAugmentationSampler(range(10), num_repeats=3, seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 30
    assert Counter(order) == {i: 3 for i in range(10)}
    # on one process the copies are adjacent, so they share a batch (Hoffer et al.)
    assert all(order[k] == order[k + 1] == order[k + 2] for k in range(0, 30, 3))
    assert sorted(order[::3]) == list(range(10)) and order[::3] != list(range(10))


def test_epochs_and_seeds():
    sampler = RepeatedAugmentationSampler(range(50), seed=3)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(RepeatedAugmentationSampler(range(50), seed=4)) != first
    assert list(RepeatedAugmentationSampler(range(4), num_repeats=2, shuffle=False)) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_partition_across_two_replicas():
    ranks = [list(RepeatedAugmentationSampler(range(10), num_repeats=3, seed=1, num_replicas=2, rank=r))
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 15
    assert Counter(ranks[0] + ranks[1]) == {i: 3 for i in range(10)}
    # interleaving the shards rebuilds the one-process order
    merged = [i for pair in zip(*ranks) for i in pair]
    assert merged == list(RepeatedAugmentationSampler(range(10), num_repeats=3, seed=1))


def test_padding_when_uneven():
    ranks = [list(RepeatedAugmentationSampler(range(7), num_repeats=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 11
    counts = Counter(ranks[0] + ranks[1])
    assert all(counts[i] >= 3 for i in range(7)) and sum(counts.values()) == 22


def test_invalid_arguments():
    with pytest.raises(ValueError):
        RepeatedAugmentationSampler(range(5), num_repeats=0)
    with pytest.raises(ValueError):
        RepeatedAugmentationSampler(range(5), num_replicas=2, rank=2)
    with pytest.raises(ValueError):
        RepeatedAugmentationSampler([])
