"""Sharded surfaces: 3 part files merged equal one process; refusals; the job array through submitit locally."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from landscape.__main__ import main
from landscape.directions import random_directions
from landscape.grid import coarse_to_fine
from landscape.merge import MergeError, merge_parts, parse_shard, part_path, whole_path
from landscape.store import VALUE_NAMES, read_surface, settings_difference
from landscape.surface import compute_surface

XS, YS = "-1:0.5:4", "-0.4:1.2:5"
META = {"model": {"name": "tiny"}, "checkpoint_sha256": "abc"}
ROOT = Path(__file__).resolve().parents[2]


def _assert_same_values(a, b):
    for name in VALUE_NAMES:
        np.testing.assert_array_equal(a.values[name], b.values[name])


def test_three_shards_merged_equal_one_process(cnn, data, tmp_path):
    d = random_directions(cnn, seed=0)
    out = tmp_path / "surf.h5"
    calls: list[int] = []

    def counting(model):
        calls.append(1)
        return model

    whole = compute_surface(tmp_path / "one.h5", cnn, d, data, XS, YS, metadata=META, progress=False,
                            forward_factory=counting)

    order = coarse_to_fine((4, 5))
    parts = []
    for i in (1, 2, 3):
        calls.clear()
        parts.append(compute_surface(part_path(out, i, 3), cnn, d, data, XS, YS, metadata=META, progress=False,
                                     shard=(i, 3), forward_factory=counting))
        part = read_surface(parts[-1])
        assert part.settings["shard"] == f"{i}/3"
        assert {tuple(map(int, p)) for p in np.argwhere(part.done)} == set(order[i - 1 :: 3])  # its own points
        assert len(calls) == len(order[i - 1 :: 3])
    calls.clear()  # resume per part: a finished part computes nothing
    compute_surface(parts[0], cnn, d, data, XS, YS, metadata=META, progress=False, shard=(1, 3),
                    forward_factory=counting)
    assert calls == []
    assert [p.name for p in parts] == [f"surf.part-{i}-of-3.h5" for i in (1, 2, 3)] and whole_path(parts[1]) == out

    report = merge_parts(parts, out)
    assert report.complete and report.done == report.total == 20 and report.missing_shards == []
    merged, one = read_surface(out), read_surface(whole)
    assert merged.complete
    _assert_same_values(merged, one)
    assert settings_difference(merged.settings, one.settings) == {}  # resumable like a one-process file
    compute_surface(out, cnn, d, data, XS, YS, metadata=META, progress=False, forward_factory=counting)
    assert calls == []


def test_missing_parts_and_refusals(cnn, data, tmp_path, capsys):
    d = random_directions(cnn, seed=0)
    out = tmp_path / "surf.h5"
    p1 = compute_surface(part_path(out, 1, 3), cnn, d, data, XS, YS, metadata=META, progress=False, shard=(1, 3))
    p2 = compute_surface(part_path(out, 2, 3), cnn, d, data, XS, YS, metadata=META, progress=False, shard=(2, 3))
    report = merge_parts([p1, p2], out)
    assert not report.complete and report.missing_shards == [3]
    assert report.missing == sorted(coarse_to_fine((4, 5))[2::3])
    assert main(["merge", str(p1), str(p2)]) == 1  # --out defaults to the parts' whole file
    err = capsys.readouterr().err
    assert f"{len(report.missing)} point(s) missing" in err and "missing shard(s): 3" in err

    other = tmp_path / "other.h5"  # other directions (seed): refused, naming the setting
    p3 = compute_surface(part_path(other, 3, 3), cnn, random_directions(cnn, seed=5), data, XS, YS, metadata=META,
                         progress=False, shard=(3, 3))
    with pytest.raises(MergeError, match=r"other settings .*(directions_sha256|seed)"):
        merge_parts([p1, p2, p3], tmp_path / "bad.h5")
    assert main(["merge", str(p1), str(p3), "--out", str(tmp_path / "bad.h5")]) == 2
    assert "refusing to merge" in capsys.readouterr().err
    assert not (tmp_path / "bad.h5").exists()
    with pytest.raises(MergeError, match="both shard 1/3"):
        merge_parts([p1, compute_surface(part_path(tmp_path / "x.h5", 1, 3), cnn, d, data, XS, YS, metadata=META,
                                         progress=False, shard=(1, 3))], tmp_path / "dup.h5")
    with pytest.raises(ValueError, match="I/N"):
        parse_shard("4/3")


@pytest.mark.slow
def test_job_array_through_submitit_equals_one_process(tmp_path, monkeypatch, capsys):
    pytest.importorskip("bnext.models")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    common = ["compute", "--model", "bnext18", "--model-option", "width=0.125", "--input-size", "8",
              "--data", "digits", "--subset", "16", "--x", "-1:1:3", "--y", "-1:1:3", "--forward", "torch",
              "--no-progress", "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "one.h5")]) == 0
    out = tmp_path / "array" / "surf.h5"
    code = main([*common, "--out", str(out), "--executor", "slurm", "--submitit-cluster", "local", "--shards", "3",
                 "--slurm-time", "10"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "submitted 3 shard job(s)" in printed and "9 of 9 points" in printed
    assert sorted(p.name for p in out.parent.glob("*.part-*")) == [f"surf.part-{i}-of-3.h5" for i in (1, 2, 3)]
    merged, one = read_surface(out), read_surface(tmp_path / "one.h5")
    assert merged.complete
    _assert_same_values(merged, one)
