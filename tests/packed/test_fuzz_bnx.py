"""Structure-aware fuzzing of the ``.bnx`` reader (issue 24): header fields deleted or retyped, arrays
deleted, retyped, reshaped or cut, the file truncated. Every case ends in a correct load or a
:class:`PackedFormatError` (one line naming the file), never another exception or a huge allocation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bnext.packed import PackedFormatError, info, load, pack, save
from bnext.packed.fileformat import HEADER, read
from tests._fuzz import CUTS, FLIPS, FUZZ, damaged_copy

from .conftest import make_model

JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from([10**12, 2**63, -(10**9)]),
                        st.floats(allow_nan=True), st.text(max_size=4), st.lists(st.integers(0, 3), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2))
DTYPES = ["int8", "uint8", "int64", "float16", "float64", "bool", "<U2", "complex64"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    path = save(pack(make_model("xnornet18", 32, 0.1)), tmp_path_factory.mktemp("fuzz") / "ok.bnx")
    header, arrays = read(path)
    return path, header, arrays


def _paths(node, prefix=()):
    """Every (path) into the header JSON."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _write(path, header, arrays):
    blob = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **{HEADER: blob}, **arrays)
    return path


def _outcome(path) -> None:
    for reader in (info, load):
        try:
            reader(path)
        except PackedFormatError as exc:  # the module's own error: one line naming the file
            assert path.name in str(exc) and "\n" not in str(exc).strip(), str(exc)


@FUZZ
@given(data=st.data())
def test_fuzzed_headers(tmp_path, valid, data):
    _, header, arrays = valid
    header = copy.deepcopy(header)
    target = data.draw(st.sampled_from([p for p in _paths(header) if p]))
    node = header
    for k in target[:-1]:
        node = node[k]
    if data.draw(st.booleans()) and isinstance(node, dict):
        del node[target[-1]]
    else:
        node[target[-1]] = data.draw(JSON_VALUES)
    _outcome(_write(tmp_path / "h.bnx", header, arrays))


@FUZZ
@given(data=st.data())
def test_fuzzed_arrays(tmp_path, valid, data):
    _, header, arrays = valid
    arrays = dict(arrays)
    key = data.draw(st.sampled_from(sorted(arrays)))
    action = data.draw(st.sampled_from(["delete", "dtype", "shape", "cut", "extend"]))
    a = arrays[key]
    if action == "delete":
        del arrays[key]
    elif action == "dtype":
        arrays[key] = a.astype(data.draw(st.sampled_from(DTYPES)))
    elif action == "shape":
        arrays[key] = a.reshape(-1)[: a.size - a.size % 2].reshape(-1, 2) if a.size >= 2 else a.reshape(1, -1)
    elif action == "cut":
        arrays[key] = a.reshape(-1)[: data.draw(st.integers(0, max(0, a.size - 1)))]
    else:
        arrays[key] = np.concatenate([a.reshape(-1), a.reshape(-1)[:1]])
    _outcome(_write(tmp_path / "a.bnx", header, arrays))


@FUZZ
@given(cut=CUTS, flip=FLIPS)
def test_truncated_or_flipped_files(tmp_path, valid, cut, flip):
    _outcome(damaged_copy(valid[0], tmp_path / "t.bnx", cut, flip))
