import numpy as np
import pytest
import torch

from bnext.data import DatasetLayoutError, dataset_info, get_dataset, load_tensors
from bnext.data.digits import digits_raw
from bnext.data.info import DIGITS_MEAN, DIGITS_STD


def test_split_sizes_labels_and_classes():
    x_tr, y_tr = load_tensors("digits", "train")
    x_te, y_te = load_tensors("digits", "test")
    assert len(x_tr) == len(y_tr) == 1437
    assert len(x_te) == len(y_te) == 360
    for y in (y_tr, y_te):
        assert y.dtype == torch.long
        assert int(y.min()) == 0 and int(y.max()) == 9
        assert set(y.tolist()) == set(range(10))
    # stratified: every class has 35 to 37 test images
    counts = np.bincount(y_te.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


@pytest.mark.parametrize("size", [8, 32])
def test_shapes_dtype_and_three_equal_channels(size):
    x, _ = load_tensors("digits", "train", input_size=size)
    assert x.shape == (1437, 3, size, size) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])


def test_shape_at_224():
    x, y = load_tensors("digits", "test", input_size=224)
    assert x.shape == (360, 3, 224, 224) and y.shape == (360,)
    assert abs(float(x[:, 0].mean())) < 0.2


def test_deterministic_and_seeded():
    a, ya = load_tensors()
    b, yb = load_tensors()
    assert torch.equal(a, b) and torch.equal(ya, yb)
    c, yc = load_tensors(seed=1)
    assert c.shape == a.shape and not torch.equal(yc, ya)


def test_train_statistics_are_normalized():
    x, _ = load_tensors("digits", "train", input_size=32)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3
    # the stored constants are the train split's statistics at 32x32
    raw, _ = digits_raw("train", input_size=32)
    assert raw.mean().item() == pytest.approx(DIGITS_MEAN, abs=1e-6)
    assert raw.std().item() == pytest.approx(DIGITS_STD, abs=1e-6)
    assert dataset_info("digits").mean == (DIGITS_MEAN,) * 3
    # other resolutions share the constants: the mean is kept, the std stays near 1
    for size in (8, 64):
        xs, _ = load_tensors("digits", "train", input_size=size)
        assert abs(float(xs.mean())) < 1e-3
        assert 0.95 < float(xs.std()) < 1.2


def test_test_split_uses_train_constants():
    raw, _ = digits_raw("test", input_size=32)
    x, _ = load_tensors("digits", "test", input_size=32)
    torch.testing.assert_close(x[:, 1:2], (raw - DIGITS_MEAN) / DIGITS_STD)


def test_dataset_matches_tensors_without_augmentation():
    x, y = load_tensors("digits", "test", input_size=32)
    ds = get_dataset("digits", "test")
    assert len(ds) == 360 and ds.classes == [str(i) for i in range(10)]
    for i in (0, 17, 359):
        image, label = ds[i]
        torch.testing.assert_close(image, x[i])
        assert label == int(y[i])


def test_large_resolution_resizes_per_item_identically():
    x, _ = load_tensors("digits", "test", input_size=96)
    ds = get_dataset("digits", "test", input_size=96)
    torch.testing.assert_close(ds[3][0], x[3], atol=1e-5, rtol=0)


def test_augmented_train_items_keep_shape_and_test_is_not_augmented():
    train = get_dataset("digits", "train", augment="randaugment")
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label <= 9
    test = get_dataset("digits", "test", augment="randaugment")
    torch.testing.assert_close(test[0][0], test[0][0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_tensors("digits", "validation")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_tensors("mnist")
    with pytest.raises(ValueError, match="imagenet"):
        load_tensors("imagenet")
    with pytest.raises(ValueError, match="input_size"):
        load_tensors(input_size=0)
    assert issubclass(DatasetLayoutError, ValueError)
