"""Structure-aware fuzzing of the checkpoint loaders (issue 24): fields deleted or retyped, tensors
reshaped, retyped or replaced by broadcast views, the file truncated or a byte flipped. ``models.load``
ends in a correct load or a :class:`CheckpointError`; ``models.import_official`` in a correct import or an
:class:`OfficialCheckpointError`; never another exception or a huge allocation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bnext import models
from bnext.models import CheckpointError
from bnext.models.official import OfficialCheckpointError, import_official
from tests._fuzz import CUTS, FLIPS, FUZZ, damaged_copy

FIELDS = ["format", "version", "model", "num_classes", "input_size", "options", "state_dict", "extra"]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.sampled_from([10**12, 2**70, 0.5, "x", "bnext18"]),
                   st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.sampled_from(["width", "bogus"]),
                                                                            st.sampled_from([0.1, 1e6, -1, "a"]),
                                                                            max_size=2),
                   st.just(torch.zeros(2)))
DTYPES = [torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool, torch.complex64]


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "ok.pt"
    models.save(models.create("xnornet18", num_classes=10, input_size=32, width=0.1), path)
    return path


def _outcome(path) -> None:
    try:
        models.load(path)
    except CheckpointError as exc:  # the module's own error: one line naming the file
        assert path.name in str(exc) and "\n" not in str(exc).strip(), str(exc)
    try:
        import_official(path)
    except OfficialCheckpointError as exc:
        assert path.name in str(exc), str(exc)


@FUZZ
@given(data=st.data())
def test_fuzzed_fields(tmp_path, valid, data):
    ckpt = torch.load(valid, weights_only=True)
    field = data.draw(st.sampled_from(FIELDS))
    if data.draw(st.booleans()):
        ckpt.pop(field, None)
    else:
        ckpt[field] = data.draw(VALUES)
    path = tmp_path / "f.pt"
    torch.save(ckpt, path)
    _outcome(path)


@FUZZ
@given(data=st.data())
def test_fuzzed_tensors(tmp_path, valid, data):
    ckpt = torch.load(valid, weights_only=True)
    sd = ckpt["state_dict"]
    key = data.draw(st.sampled_from(sorted(sd)))
    t = sd[key]
    action = data.draw(st.sampled_from(["delete", "dtype", "shape", "broadcast", "scalar", "extra_key"]))
    if action == "delete":
        del sd[key]
    elif action == "dtype":
        sd[key] = t.to(data.draw(st.sampled_from(DTYPES)))
    elif action == "shape":
        sd[key] = t.reshape(-1)[: max(0, t.numel() - 1)]
    elif action == "broadcast":
        sd[key] = torch.zeros(1).expand(data.draw(st.sampled_from([10**6, 10**12])), *t.shape[1:])
        ckpt["num_classes"] = data.draw(st.sampled_from([10, 10**12]))
    elif action == "scalar":
        sd[key] = torch.tensor(1.0)
    else:
        sd[key + ".bogus"] = t.clone()
    path = tmp_path / "t.pt"
    torch.save(ckpt, path)
    _outcome(path)


@FUZZ
@given(cut=CUTS, flip=FLIPS)
def test_truncated_or_flipped_files(tmp_path, valid, cut, flip):
    _outcome(damaged_copy(valid, tmp_path / "c.pt", cut, flip))
