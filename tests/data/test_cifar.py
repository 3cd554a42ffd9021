import pickle

import numpy as np
import pytest
import torch

from bnext.data import DatasetLayoutError, dataset_info, get_dataset, load_tensors
from bnext.data.cifar import LocalCIFAR10

from .conftest import dump_py2


def _expected(row: np.ndarray, name: str) -> torch.Tensor:
    info = dataset_info(name)
    image = torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32) / 255)
    return (image - torch.tensor(info.mean).view(3, 1, 1)) / torch.tensor(info.std).view(3, 1, 1)


def test_fake_files_have_the_real_pickle_format(make_cifar):
    root, _ = make_cifar("cifar10")
    path = root / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:
        as_bytes = pickle.load(f, encoding="bytes")  # how the CIFAR website reads them
    assert as_bytes[b"data"].dtype == np.uint8 and as_bytes[b"data"].shape == (4, 3072)
    assert isinstance(as_bytes[b"labels"], list)
    with open(path, "rb") as f:
        as_latin1 = pickle.load(f, encoding="latin1")  # how torchvision reads them
    assert set(as_latin1) == {"batch_label", "data", "filenames", "labels"}


def test_cifar10_loads_through_torchvision(make_cifar):
    root, batches = make_cifar("cifar10")
    train = get_dataset("cifar10", "train", root=str(root))
    test = get_dataset("cifar10", "test", root=root)
    assert len(train) == 20 and len(test) == 6
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    # item 5 is the second image of data_batch_2; channel-major rows become [3, 32, 32] unchanged
    image, label = train[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    torch.testing.assert_close(image, _expected(batches["train"][1][b"data"][1], "cifar10"))
    assert label == batches["train"][1][b"labels"][1]
    image, label = test[2]
    torch.testing.assert_close(image, _expected(batches["test"][0][b"data"][2], "cifar10"))
    assert label == batches["test"][0][b"labels"][2]


def test_cifar100_fine_labels(make_cifar):
    root, batches = make_cifar("cifar100")
    train = get_dataset("cifar100", "train", root=root, augment="standard")
    test = get_dataset("cifar100", "val", root=root)
    assert len(train) == 20 and len(test) == 6 and len(train.classes) == 100
    assert train.targets == batches["train"][0][b"fine_labels"]
    assert train[0][0].shape == (3, 32, 32)
    torch.testing.assert_close(test[1][0], _expected(batches["test"][0][b"data"][1], "cifar100"))


def test_load_tensors_and_resizing(make_cifar):
    root, batches = make_cifar("cifar10")
    x, y = load_tensors("cifar10", "test", root=root)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == batches["test"][0][b"labels"]
    torch.testing.assert_close(x[4], _expected(batches["test"][0][b"data"][4], "cifar10"))
    x64, _ = load_tensors("cifar10", "test", root=root, input_size=64)
    assert x64.shape == (6, 3, 64, 64)
    assert get_dataset("cifar10", "test", root=root, input_size=64)[0][0].shape == (3, 64, 64)


def test_root_may_name_the_batches_folder(make_cifar):
    root, _ = make_cifar("cifar10")
    assert len(get_dataset("cifar10", "test", root=root / "cifar-10-batches-py")) == 6


def test_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        get_dataset("cifar10", "train", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "data_batch_1..5" in msg and "test_batch" in msg and "batches.meta" in msg
    with pytest.raises(DatasetLayoutError, match=r"cifar-100-python/\{train, test, meta\}"):
        get_dataset("cifar100", "train", root=tmp_path)
    with pytest.raises(DatasetLayoutError, match="no root"):
        get_dataset("cifar10", "train")


def test_missing_file_is_named(make_cifar):
    root, _ = make_cifar("cifar10")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetLayoutError, match="lacks data_batch_3"):
        get_dataset("cifar10", "test", root=root)


def test_malformed_files(make_cifar):
    root, _ = make_cifar("cifar10")
    base = root / "cifar-10-batches-py"
    (base / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetLayoutError, match="test_batch is not a readable CIFAR batch file"):
        get_dataset("cifar10", "test", root=root)
    (base / "test_batch").write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match="test_batch is not a readable CIFAR batch file"):
        get_dataset("cifar10", "test", root=root)
    dump_py2({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, base / "test_batch")
    with pytest.raises(DatasetLayoutError, match=r"is uint8 \[2, 100\], expected uint8 \[N, 3072\]"):
        get_dataset("cifar10", "test", root=root)
    dump_py2({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, base / "test_batch")
    with pytest.raises(DatasetLayoutError, match="outside 0..9"):
        get_dataset("cifar10", "test", root=root)
    dump_py2({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, base / "test_batch")
    with pytest.raises(DatasetLayoutError, match="2 images but 1 labels"):
        get_dataset("cifar10", "test", root=root)


def test_official_checksums_can_be_required(make_cifar):
    root, _ = make_cifar("cifar10")
    with pytest.raises(DatasetLayoutError, match="md5"):
        LocalCIFAR10(root, train=False, verify_md5=True)
    assert len(LocalCIFAR10(root, train=False)) == 6


class _Payload:
    """A pickle that runs ``open(marker, 'w')`` when unpickled by a plain ``pickle.load``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("where", ["data_batch_1", "batches.meta"])
def test_crafted_pickle_is_refused_and_never_runs(make_cifar, tmp_path, where):
    root, _ = make_cifar("cifar10")
    marker = tmp_path / "pwned"
    base = root / "cifar-10-batches-py"
    payload = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Payload(marker)}
    (base / where).write_bytes(pickle.dumps(payload, protocol=2))
    refused = f"{where} was refused by the safe CIFAR reader.*global io.open is not allowed"
    with pytest.raises(DatasetLayoutError, match=refused):
        get_dataset("cifar10", "train", root=root)
    assert not marker.exists()
    with open(base / where, "rb") as f:  # the control: a plain unpickler does run it
        pickle.load(f)
    assert marker.exists()


def test_safe_reader_admits_python3_pickles_of_the_same_content(make_cifar):
    root, batches = make_cifar("cifar10")
    base = root / "cifar-10-batches-py"
    for protocol in (2, 5):  # protocol 2 pickles bytes via _codecs.encode, 5 arrays via _frombuffer
        for i, b in enumerate(batches["train"], 1):
            (base / f"data_batch_{i}").write_bytes(pickle.dumps(b, protocol=protocol))
        ds = get_dataset("cifar10", "train", root=root)
        assert ds.targets == [v for b in batches["train"] for v in b[b"labels"]]
        np.testing.assert_array_equal(ds.data[0].transpose(2, 0, 1).reshape(-1), batches["train"][0][b"data"][0])


def test_verify_md5_names_the_file_and_is_a_config_option(make_cifar, tmp_path):
    from bnext.train.config import load_config
    from bnext.train.data import build_data

    root, _ = make_cifar("cifar10")
    with pytest.raises(DatasetLayoutError, match=r"test_batch has md5 [0-9a-f]{32}, the official file has "
                                                 "40351d587109b95175f43aff81a1287e"):
        LocalCIFAR10(root, train=False, verify_md5=True)
    cfg = load_config(None, ["data.name=cifar10", f"data.root={root}", "data.verify_md5=true",
                             f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(DatasetLayoutError, match="data_batch_1 has md5"):
        build_data(cfg)
    assert build_data(load_config(None, ["data.name=cifar10", f"data.root={root}"])).num_classes == 10
