import pytest
import torch

from bnext.data import DatasetLayoutError, get_dataset


def test_train_and_val_load(make_image_tree):
    root = make_image_tree(train={"cat": 3, "dog": 2}, val={"cat": 2, "dog": 2})
    train = get_dataset("imagenet", "train", root=root, input_size=64, augment="standard")
    val = get_dataset("imagenet", "val", root=str(root), input_size=64)
    assert len(train) == 5 and len(val) == 4
    assert train.classes == val.classes == ["cat", "dog"]
    assert train.targets == [0, 0, 0, 1, 1] and val.targets == [0, 0, 1, 1]
    for ds in (train, val):
        image, label = ds[len(ds) - 1]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and label == 1
    # evaluation is deterministic (resize + center crop)
    torch.testing.assert_close(val[0][0], val[0][0])
    # default resolution is ImageNet's 224
    assert get_dataset("imagenet", "test", root=root)[0][0].shape == (3, 224, 224)


def test_missing_or_empty_val(make_image_tree):
    root = make_image_tree(train={"cat": 1, "dog": 1})
    with pytest.raises(DatasetLayoutError) as err:
        get_dataset("imagenet", "val", root=root)
    assert str(root / "val") in str(err.value) and "<root>/val/<class>/<image>" in str(err.value)
    (root / "val").mkdir()
    with pytest.raises(DatasetLayoutError, match="no class sub-folders"):
        get_dataset("imagenet", "val", root=root)
    # the raw ILSVRC val layout: images directly in val/
    (root / "train" / "cat" / "cat_0.JPEG").rename(root / "val" / "flat.JPEG")
    with pytest.raises(DatasetLayoutError, match="no class sub-folders"):
        get_dataset("imagenet", "val", root=root)


def test_class_folder_without_images(make_image_tree):
    root = make_image_tree(train={"cat": 1, "dog": 1}, val={"cat": 1, "dog": 1})
    for f in (root / "val" / "dog").iterdir():
        f.unlink()
    (root / "val" / "dog" / "notes.txt").write_text("no image here")
    with pytest.raises(DatasetLayoutError, match="dog"):
        get_dataset("imagenet", "val", root=root)


def test_mismatched_classes_between_splits(make_image_tree):
    root = make_image_tree(train={"cat": 1, "dog": 1, "emu": 1}, val={"cat": 1, "emu": 1})
    with pytest.raises(DatasetLayoutError, match=r"only in train/: \['dog'\]"):
        get_dataset("imagenet", "val", root=root)


def test_missing_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match="train"):
        get_dataset("imagenet", "train", root=tmp_path / "absent")
    with pytest.raises(DatasetLayoutError, match="no root"):
        get_dataset("imagenet", "train")
