"""``landscape compute`` checks user models and data on one batch before a surface file exists (issue 24):
float or out-of-range targets, inputs the model cannot take, callables that raise or do not import."""

import textwrap

import pytest

from landscape.__main__ import main

MODULE = '''
import torch
from torch import nn


def build(hidden=4):
    return nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 3))


def _x():
    return torch.randn(12, 3, generator=torch.Generator().manual_seed(0))


def good():
    return _x(), _x().argmax(1)


def float_targets():
    return _x(), _x().argmax(1).float()


def out_of_range():
    return _x(), _x().argmax(1) + 5


def wrong_shape():
    return torch.randn(12, 7), _x().argmax(1)


def broken():
    raise KeyError("no such split in my store")


def broken_model(hidden=4):
    raise RuntimeError("weights server unreachable")
'''


@pytest.fixture
def mod(tmp_path, monkeypatch):
    (tmp_path / "vmod.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "bad_syntax.py").write_text("def build(:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _compute(tmp_path, model, data, capsys):
    out = tmp_path / "s.h5"
    rc = main(["compute", "--model", model, "--data", data, "--x=-1:1:3", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    return rc, err, out


@pytest.mark.parametrize("data, message", [
    ("float_targets", r"targets are float32 of shape \(12,\); cross-entropy needs integer class indices 0..2"),
    ("out_of_range", r"targets range over 5..7 but the model has 3 classes \(expected 0..2\)"),
    ("wrong_shape", r"the model cannot take inputs of shape \(7,\) \(RuntimeError: "),
    ("broken", r"--data 'vmod.py:broken' raised KeyError: 'no such split in my store'"),
])
def test_bad_data_is_refused_in_one_line_before_a_file_exists(mod, capsys, data, message):
    import re

    rc, err, out = _compute(mod, "vmod.py:build", f"vmod.py:{data}", capsys)
    assert rc == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists() and not list(mod.glob(".s.h5*"))  # nothing blocks the corrected rerun
    rc, err, out = _compute(mod, "vmod.py:build", "vmod.py:good", capsys)
    assert rc == 0 and out.exists(), err


@pytest.mark.parametrize("model, message", [
    ("vmod.py:broken_model", r"--model 'vmod.py:broken_model' raised RuntimeError: weights server unreachable"),
    ("bad_syntax.py:build", r"--model 'bad_syntax.py:build': importing 'bad_syntax.py' failed \(SyntaxError: "),
])
def test_user_models_that_fail_are_reported_in_one_line(mod, capsys, model, message):
    import re

    rc, err, out = _compute(mod, model, "vmod.py:good", capsys)
    assert rc == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert not out.exists()


BIG = '''
import torch
from torch import nn


def build():
    return nn.Sequential(nn.Linear(3, 200000), nn.Linear(200000, 3))


def data():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    return x, x.argmax(1)
'''


def test_check_memory_names_the_flag_and_the_estimate():
    from landscape.grid import TooMuchMemoryError, check_memory

    assert check_memory("--top-k 5", 10, "a basis", "use less", available=100) == 10
    with pytest.raises(TooMuchMemoryError, match=r"^--top-k 1000 needs about 54.0 GiB of memory for a basis; "
                                                 r"1.0 GiB are available: use less$"):
        check_memory("--top-k 1000", 58 * 10**9, "a basis", "use less", available=2**30)


def test_hessian_top_k_that_cannot_fit_is_refused_with_the_estimate(tmp_path, monkeypatch, capsys):
    (tmp_path / "big.py").write_text(textwrap.dedent(BIG))
    monkeypatch.chdir(tmp_path)
    rc = main(["hessian", "--model", "big.py:build", "--data", "big.py:data", "--top-k", "100000", "--no-progress",
               "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "the Lanczos basis would take 5215.42 GiB (1000000 vectors x 1,400,003 parameters, float32)" in err
    assert "--basis-dir" in err and "--max-basis-gb" in err  # and what to do instead
