"""``python -m landscape compute --model module:callable --data module:callable`` with a model outside the zoo."""

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from landscape.__main__ import main
from landscape.store import read_surface

MODULE = '''
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Wide(nn.Module):  # not a zoo model
    def __init__(self, hidden):
        super().__init__()
        self.a = nn.Linear(3, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.b = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.bn(self.a(x))))


def build(hidden=5):
    return Wide(hidden)


def tensors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    return {"train": (x, x.argmax(1)), "test": (x[:20] * 2, x[:20].argmax(1))}


def loader():
    x, y = tensors()["train"]
    return DataLoader(TensorDataset(x, y), batch_size=16)


def not_a_model():
    return 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_pkg").mkdir()
    (tmp_path / "my_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_pkg" / "my_module.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_own_model_and_data(user_module, capsys):
    base = ["compute", "--model", "my_pkg.my_module:build", "--model-option", "hidden=7", "--data",
            "my_pkg.my_module:tensors", "--splits", "train,test", "--no-progress", "--init-seed", "4"]
    assert main([*base, "--x", "-1:1:3", "--y", "-1:1:2"]) == 0
    s = read_surface(user_module / "runs/my_module_build/landscape_random_2d.h5")
    assert s.complete and s.settings["model"] == {"callable": "my_pkg.my_module:build", "class": "Wide",
                                                  "options": {"hidden": 7}}
    assert np.isfinite(s.values["test_loss"]).all() and np.ptp(s.values["test_loss"]) > 0
    # the centre equals the model built the same way (seeded), evaluated by hand
    from my_pkg.my_module import build, tensors

    torch.manual_seed(4)
    model = build(hidden=7).eval()
    x, y = tensors()["test"]
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x), y).item()
    assert main([*base, "--x", "0:0:1", "--out", "c.h5"]) == 0
    assert abs(read_surface(user_module / "c.h5").values["test_loss"][0] - expected) < 1e-6
    # a DataLoader serves the first requested split; a file path works as well as a module path
    assert main(["compute", "--model", "my_pkg/my_module.py:build", "--data", "my_pkg.my_module:loader",
                 "--x", "-1:1:3", "--no-progress", "--out", "dl.h5"]) == 0
    assert read_surface(user_module / "dl.h5").settings["samples"] == {"train": 40}


@pytest.mark.parametrize(
    "model, data, message",
    [
        ("my_pkg.my_module:missing", "my_pkg.my_module:tensors", "has no callable 'missing'"),
        ("my_pkg.nowhere:build", "my_pkg.my_module:tensors", "cannot import 'my_pkg.nowhere'"),
        ("my_pkg.my_module:not_a_model", "my_pkg.my_module:tensors", "returned int, expected a torch.nn.Module"),
        ("my_pkg.my_module:build", "my_pkg.my_module:loader", "returned one data set but --splits asks"),
    ],
)
def test_own_model_errors(user_module, capsys, model, data, message):
    argv = ["compute", "--model", model, "--data", data, "--x", "0:1:2", "--no-progress", "--splits", "train,test"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
