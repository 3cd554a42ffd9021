"""Checkpoint files that fail: one-line CheckpointError, no torch advice to unpickle, no huge allocation."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnext import models
from bnext.models import CheckpointError

ROOT = Path(__file__).parents[2]


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.pt"
    models.save(models.create("xnornet18", num_classes=10, input_size=32, width=0.1), path)
    return path


def _raw(path):
    return torch.load(path, weights_only=True)


def test_empty_file_is_a_checkpoint_error(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt is not a readable workbench checkpoint \(EOFError: the "
                                              r"file is empty or ends early\)"):
        models.load(empty)  # was IndexError: the first line of an empty message


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("how", ["pickle", "torch"])
def test_unsafe_file_message_never_suggests_weights_only_false(tmp_path, how):
    path = tmp_path / "evil.pt"
    if how == "pickle":
        path.write_bytes(pickle.dumps(_Payload()))
    else:
        torch.save({"x": _Payload()}, path)
    with pytest.raises(CheckpointError) as e:
        models.load(path)
    msg = str(e.value)
    assert "refused by the safe loader" in msg and "evil.pt" in msg and "\n" not in msg
    assert "weights_only` set to `False" not in msg and "can still be loaded" not in msg
    assert "weights_only=False" not in msg


def test_options_that_disagree_with_the_tensors(tmp_path, saved):
    ckpt = _raw(saved)
    ckpt["options"]["width"] = 0.25
    torch.save(ckpt, tmp_path / "width.pt")
    with pytest.raises(CheckpointError, match="options disagree with the tensors"):
        models.load(tmp_path / "width.pt")  # was a raw RuntimeError (size mismatch)
    ckpt = _raw(saved)
    ckpt["options"]["no_such_option"] = 1
    torch.save(ckpt, tmp_path / "option.pt")
    with pytest.raises(CheckpointError, match="cannot rebuild model 'xnornet18'"):
        models.load(tmp_path / "option.pt")


def test_tampered_num_classes_is_refused_before_allocation(tmp_path, saved):
    ckpt = _raw(saved)
    ckpt["num_classes"] = 10**12  # a classifier of 10^12 rows would be allocated by create()
    torch.save(ckpt, tmp_path / "classes.pt")
    with pytest.raises(CheckpointError, match=r"is \(10, .*\) in the file, \(1000000000000, "):
        models.load(tmp_path / "classes.pt")


@pytest.mark.parametrize("field,value", [("model", 3), ("options", []), ("state_dict", None), ("version", "1")])
def test_malformed_fields(tmp_path, saved, field, value):
    ckpt = _raw(saved)
    ckpt[field] = value
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt"):
        models.load(tmp_path / "bad.pt")


@pytest.mark.slow
def test_models_never_import_quant_and_quantized_checkpoints_say_how_to_load(tmp_path):
    quant = pytest.importorskip("bnext.quant")
    q = quant.quantize(models.create("bnext18", num_classes=10, input_size=32, width=0.1), "8/8-4/8-4/8-8/8")
    quant.save(q, tmp_path / "q.pt")
    code = ("import sys, bnext.models as m\n"
            "assert 'bnext.quant' not in sys.modules, 'bnext.models imported bnext.quant'\n"
            "try:\n    m.load(sys.argv[1])\nexcept m.CheckpointError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "q.pt")], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "post-training-quantized model (spec '8/8-4/8-4/8-8/8'); load it with bnext.quant.load" in r.stdout
    assert models.load(tmp_path / "q.pt").quant_spec == "8/8-4/8-4/8-8/8"  # bnext.quant imported: rebuilt


@pytest.mark.parametrize("content", [b"", "unsafe"])
def test_teacher_weights_that_fail_the_safe_load(tmp_path, content):
    from bnext.kd.teachers import load_state_dict_file

    path = tmp_path / "teacher.pth"
    path.write_bytes(pickle.dumps(_Payload()) if content == "unsafe" else content)
    with pytest.raises(ValueError, match="teacher weights .*teacher.pth could not be read") as e:
        load_state_dict_file(path)  # was IndexError for the empty file
    assert "weights_only=False" not in str(e.value) and "weights_only` set to `False" not in str(e.value)
