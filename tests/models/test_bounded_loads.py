"""Files cannot make the loaders allocate more than they hold, and every writer fails in one line (issue 24).

A tensor stored as a stride-0 (or overlapping) view passes a plain shape check: a 3 MB checkpoint
whose classifier is a broadcast view of shape (10**12, in) made ``models.load`` (and ``models import``)
ask for 512 TB. Every tensor read from a file must be a dense view inside its storage.
"""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnext import models
from bnext.models import CheckpointError
from bnext.models.checkpoint import atomic_torch_save, check_consistent, storage_problem
from bnext.models.official import OfficialCheckpointError, convert_state_dict, import_official

ROOT = Path(__file__).parents[2]
HUGE = 10**12


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.pt"
    models.save(models.create("xnornet18", num_classes=10, input_size=32, width=0.1), path)
    return path


def test_storage_problem_finds_broadcast_overlapping_and_out_of_bounds_views():
    base = torch.arange(12.0)
    assert storage_problem(base) is None and storage_problem(base.view(3, 4).t()) is None  # a transpose is dense
    assert storage_problem(base[::2]) is None and storage_problem(torch.zeros(0, 5)) is None
    assert "broadcast (stride-0)" in storage_problem(torch.zeros(4).expand(HUGE, 4))
    assert "overlapping" in storage_problem(base.as_strided((5, 4), (1, 1)))
    assert storage_problem(torch.empty(0).set_(base.untyped_storage(), 8, (4,), (1,))) is None  # inside it


def test_a_broadcast_classifier_is_refused_before_anything_is_allocated(tmp_path, saved):
    ckpt = torch.load(saved, weights_only=True)
    w = ckpt["state_dict"]["head.classifier.weight"]
    ckpt["num_classes"] = HUGE
    ckpt["state_dict"]["head.classifier.weight"] = w[:1].expand(HUGE, w.shape[1])
    ckpt["state_dict"]["head.classifier.bias"] = torch.zeros(1).expand(HUGE)
    bad = tmp_path / "bomb.pt"
    torch.save(ckpt, bad)
    assert bad.stat().st_size < 2 * saved.stat().st_size
    with pytest.raises(CheckpointError, match=r"bomb.pt: tensor state_dict.head.classifier.weight is a broadcast "
                                              r"\(stride-0\) view: shape \(1000000000000, 51\)"):
        models.load(bad)


def test_the_authors_format_through_models_import(tmp_path):
    bad = tmp_path / "official.pth.tar"
    torch.save({"state_dict": {"module.fc.weight": torch.zeros(1, 256).expand(HUGE, 256)}, "epoch": 3}, bad)
    with pytest.raises(OfficialCheckpointError, match=r"official.pth.tar: tensor module.fc.weight is a broadcast"):
        import_official(bad)
    zero_d = tmp_path / "zero_d.pth.tar"
    torch.save({"state_dict": {"module.fc.weight": torch.tensor(1.0), "module.conv1.weight": torch.zeros(2)}}, zero_d)
    r = subprocess.run([sys.executable, "-m", "bnext.models", "import", str(zero_d), "-o", str(tmp_path / "o.pt")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    errors = [line for line in r.stderr.splitlines() if not line.startswith("reading ")]  # a progress note
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "tensor 'fc.weight' has shape []; expected 2 dimensions" in r.stderr
    with pytest.raises(OfficialCheckpointError, match=r"'conv1.weight' has shape \[2\]; expected 4 dimensions"):
        convert_state_dict({"fc.weight": torch.zeros(10, 4), "conv1.weight": torch.zeros(2),
                            "layer1.x": torch.zeros(1)})


def test_init_checkpoint_goes_through_the_same_check_as_load(tmp_path, saved):
    from bnext.train.runner import _load_init_checkpoint

    ckpt = torch.load(saved, weights_only=True)
    ckpt["options"] = {**ckpt["options"], "width": 0.2}  # the file's options disagree with its own tensors
    bad = tmp_path / "mismatch.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="options disagree with the tensors"):
        models.load(bad)
    with pytest.raises(CheckpointError, match="options disagree with the tensors"):
        check_consistent(bad, ckpt)
    model = models.create("xnornet18", num_classes=10, input_size=32, width=0.1)  # what the config builds
    with pytest.raises(CheckpointError, match="mismatch.pt: options disagree with the tensors"):
        _load_init_checkpoint(model, str(bad))


def test_checkpoint_writes_on_a_failing_disk_are_one_oserror(tmp_path, saved, monkeypatch):
    from bnext import io as bio

    before = saved.read_bytes()
    real_fdopen = bio.os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(bio.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match=rf"cannot write {saved}: no space left on device \(errno 28\)"):
        atomic_torch_save({"x": torch.zeros(3)}, saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_evaluate_refuses_another_input_size_before_loading_data(saved, capsys, monkeypatch):
    import bnext.evaluate as ev

    def no_data(*a, **k):
        raise AssertionError("the data were loaded (and resized) before the size check")

    monkeypatch.setattr(ev, "eval_batches", no_data)
    assert ev.main([str(saved), "--input-size", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--input-size 100000: input images are 100000x100000 but this model was trained for 32x32" in err


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool])
def test_tensors_of_another_kind_are_refused(tmp_path, saved, dtype):
    ckpt = torch.load(saved, weights_only=True)
    w = ckpt["state_dict"]["head.classifier.weight"]
    ckpt["state_dict"]["head.classifier.weight"] = w.to(dtype)
    bad = tmp_path / "kind.pt"
    torch.save(ckpt, bad)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=rf"kind.pt: tensor head.classifier.weight is {name} in the file; "
                                              r"the model's is float32"):
        models.load(bad)
    ckpt["state_dict"]["head.classifier.weight"] = w.double()  # another precision of the same kind loads
    torch.save(ckpt, bad)
    assert torch.equal(models.load(bad).head.classifier.weight, w)
