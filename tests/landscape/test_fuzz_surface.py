"""Structure-aware fuzzing of the surface reader (issue 24): datasets and attributes deleted, retyped or
reshaped, the settings attribute replaced, the file truncated or a byte flipped. Every case ends in a
correct read or a :class:`SurfaceFileError` naming the file, never another exception."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from landscape.directions import random_directions
from landscape.store import SurfaceFileError, read_directions, read_surface
from landscape.surface import compute_surface
from tests._fuzz import CUTS, FLIPS, FUZZ, damaged_copy

from ._models import make_data, make_model

ATTR_VALUES = st.one_of(st.integers(-3, 3), st.sampled_from([10**12, -1, 0]), st.floats(allow_nan=True),
                        st.text(max_size=6), st.sampled_from(['[1, 2]', '{"a": 1}', "null", '"x"', "{", b"\xff"]),
                        st.lists(st.integers(0, 3), min_size=1, max_size=3).map(np.array))
DTYPES = ["int8", "uint8", "int64", "float16", "float32", "bool", "S3"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    model = make_model("cnn")
    path = tmp_path_factory.mktemp("fuzz") / "ok.h5"
    compute_surface(path, model, random_directions(model, seed=0), {"train": make_data(8, seed=1)}, "-1:1:3",
                    "-1:1:2", progress=False)
    return path


def _objects(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visit(names.append)
    return names


def _outcome(path) -> None:
    for reader in (read_surface, read_directions):
        try:
            reader(path)
        except SurfaceFileError as exc:  # the module's own error, naming the file
            assert str(path) in str(exc), str(exc)


@FUZZ
@given(data=st.data())
def test_fuzzed_structure(tmp_path, valid, data):
    path = tmp_path / "s.h5"
    shutil.copyfile(valid, path)
    with h5py.File(path, "r+") as f:
        where = data.draw(st.sampled_from(["", *_objects(f)]))
        obj = f[where] if where else f
        action = data.draw(st.sampled_from(["attr", "delete", "dtype", "shape"] if where else ["attr", "attr_del"]))
        if action in ("attr", "attr_del") or not isinstance(obj, h5py.Dataset) and action != "delete":
            names = sorted(obj.attrs) or ["format"]
            name = data.draw(st.sampled_from([*names, "settings"]))
            if action == "attr_del" and name in obj.attrs:
                del obj.attrs[name]
            else:
                obj.attrs[name] = data.draw(ATTR_VALUES)
        elif action == "delete":
            del f[where]
        else:
            old = obj[()]
            del f[where]
            if action == "dtype":
                with np.errstate(invalid="ignore"):  # NaN cast to an integer dtype: any value will do
                    f.create_dataset(where, data=np.asarray(old).astype(data.draw(st.sampled_from(DTYPES))))
            else:
                n = data.draw(st.integers(0, 4))
                f.create_dataset(where, data=np.zeros((n,) * data.draw(st.integers(0, 3))))
    _outcome(path)


@FUZZ
@given(cut=CUTS, flip=FLIPS)
def test_truncated_or_flipped_files(tmp_path, valid, cut, flip):
    _outcome(damaged_copy(valid, tmp_path / "t.h5", cut, flip))


@pytest.mark.parametrize("command", ["plot", "compare"])
def test_settings_that_are_not_an_object_are_one_line(tmp_path, valid, capsys, command):
    from landscape.__main__ import main

    path = tmp_path / "list.h5"
    shutil.copyfile(valid, path)
    with h5py.File(path, "r+") as f:
        f.attrs["settings"] = "[1, 2]"
    with pytest.raises(SurfaceFileError, match=r"list.h5: root attribute 'settings' is a JSON list; expected an "
                                               r"object"):
        read_surface(path)
    argv = ["plot", str(path)] if command == "plot" else ["compare", str(path), str(valid)]
    rc = main([*argv, "--out", str(tmp_path / "fig")]) if command == "compare" else main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "root attribute 'settings' is a JSON list" in err, err
