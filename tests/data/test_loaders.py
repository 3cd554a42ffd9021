import pytest
import torch
from torch.utils.data import DistributedSampler

from bnext.data import (
    DATASETS,
    RepeatedAugmentationSampler,
    SyntheticDataset,
    dataset_info,
    get_dataset,
    load_tensors,
    make_loaders,
)


def _first_batch(loader):
    return next(iter(loader))


def test_dataset_info():
    assert DATASETS == ("digits", "cifar10", "cifar100", "imagenet", "synthetic")
    assert dataset_info("cifar100").num_classes == 100 and dataset_info("imagenet").input_size == 224
    assert len(dataset_info("cifar10").mean) == len(dataset_info("cifar10").std) == 3
    with pytest.raises(ValueError, match="digits, cifar10"):
        dataset_info("svhn")


def test_digits_loaders_shapes_and_reproducibility():
    train, test = make_loaders("digits", batch_size=64, augment="standard", seed=0)
    assert len(train.dataset) == 1437 and len(test.dataset) == 360 and len(train) == 23
    torch.manual_seed(0)
    x, y = _first_batch(train)
    assert x.shape == (64, 3, 32, 32) and y.shape == (64,) and y.dtype == torch.long
    train2, _ = make_loaders("digits", batch_size=64, augment="standard", seed=0)
    torch.manual_seed(0)
    x2, y2 = _first_batch(train2)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    train2.set_epoch(1)
    assert not torch.equal(_first_batch(train2)[1], y)
    train2.set_epoch(0)
    torch.manual_seed(0)
    assert torch.equal(_first_batch(train2)[0], x)
    # the test loader is ordered and un-augmented
    xt, yt = _first_batch(test)
    x_all, y_all = load_tensors("digits", "test")
    torch.testing.assert_close(xt, x_all[:64])
    assert torch.equal(yt, y_all[:64])


def test_mixup_loader_yields_soft_targets_and_repeated_sampler():
    train, _ = make_loaders("digits", batch_size=32, augment="randaugment+mixup+repeated", seed=0)
    assert isinstance(train.sampler, RepeatedAugmentationSampler)
    assert len(train.sampler) == 3 * 1437
    x, y = _first_batch(train)
    assert x.shape == (32, 3, 32, 32) and y.shape == (32, 10) and y.dtype == torch.float32
    torch.testing.assert_close(y.sum(1), torch.ones(32))


def test_synthetic_dataset():
    ds = get_dataset("synthetic", "train", input_size=16)
    assert len(ds) == 512 and len(get_dataset("synthetic", "test")) == 128
    x, y = ds[7]
    assert x.shape == (3, 16, 16) and 0 <= y < 10
    torch.testing.assert_close(ds[7][0], x)
    assert not torch.equal(get_dataset("synthetic", "train", input_size=16, seed=1)[7][0], x)
    assert get_dataset("synthetic", "train", input_size=224)[0][0].shape == (3, 224, 224)
    raw = SyntheticDataset("train", num_samples=5, num_classes=3, input_size=8)
    assert 0 <= float(raw[0][0].min()) and float(raw[0][0].max()) < 1 and len(raw) == 5
    images, labels = load_tensors("synthetic", "test", input_size=8)
    assert images.shape == (128, 3, 8, 8) and labels.shape == (128,)
    with pytest.raises(IndexError):
        raw[5]


def test_synthetic_loader_with_cutmix():
    train, test = make_loaders("synthetic", batch_size=16, augment="standard+cutmix", input_size=32)
    x, y = _first_batch(train)
    assert x.shape == (16, 3, 32, 32) and y.shape == (16, 10)
    assert _first_batch(test)[1].shape == (16,)


def test_distributed_loaders_shard_with_a_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train, test = make_loaders("synthetic", batch_size=8, augment="repeated", distributed=True)
        assert isinstance(train.sampler, RepeatedAugmentationSampler) and train.sampler.num_replicas == 1
        assert len(train.sampler) == 3 * 512
        train, test = make_loaders("synthetic", batch_size=8, augment="standard", distributed=True)
        assert isinstance(train.sampler, DistributedSampler) and isinstance(test.sampler, DistributedSampler)
        assert _first_batch(train)[0].shape == (8, 3, 32, 32)
    finally:
        dist.destroy_process_group()


def test_distributed_needs_a_process_group():
    with pytest.raises(RuntimeError, match="process group"):
        make_loaders("synthetic", batch_size=8, distributed=True)
    with pytest.raises(ValueError, match="batch_size"):
        make_loaders("synthetic", batch_size=0)
