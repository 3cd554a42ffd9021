"""A tiny end-to-end study (inline executor): points, resume, table, plots, and identical variants not told apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bnext.study import stats
from bnext.study.__main__ import main
from bnext.study.config import StudyConfigError, from_dict, load

TINY = {
    "name": "twins",
    # two identical variants (same model, same options, same seeds): a study must not tell them apart
    "variants": [{"key": "a", "model": "resnet18", "label": "ResNet A"},
                 {"key": "b", "model": "resnet18", "label": "ResNet B"}],
    "train_seeds": [0, 1],
    "direction_seeds": [0, 1],
    "train": {"width": 0.0625, "input_size": 8, "epochs": 1, "steps_per_epoch": 2, "batch_size": 32},
    "landscape": {"grid": "-1:1:3", "samples": 32},
    "curvature": {"samples": 16, "lanczos_iter": 3, "trace_cap": 3, "sharpness_epsilon": None},
    "stats": {"bootstrap": 200, "permutations": 1000},
    "reference": "a",
    "claims": [{"smoother": "a", "than": "b", "metric": "roughness", "text": "twins"}],
}


def _config(tmp_path: Path, **changes) -> Path:
    d = {**TINY, "out": str(tmp_path / "study"), **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.slow  # ~15 s of CPU: 4 tiny trainings, 8 surfaces, their curvature and the figures
def test_tiny_study_end_to_end_and_identical_variants_are_not_different(tmp_path, capsys):
    path = _config(tmp_path)
    assert main([str(path), "--executor", "inline", "--no-progress", "--format", "png"]) == 0
    text = capsys.readouterr().out
    assert "NOT RESOLVED" in text and "ResNet A smoother than ResNet B" in text
    out = tmp_path / "study"
    result = json.loads((out / "study.json").read_text())
    # every surface and curvature result has its own file, and every one was aggregated
    assert len(list((out / "points").glob("*/surfaces/d*_k0.h5"))) == 8
    assert len(list((out / "points").glob("*/curvature.json"))) == 4
    s = result["summary"]["roughness"]
    assert s["a"]["n_train"] == 2 and s["a"]["n_per_train"] == 2
    assert s["a"]["ci_low"] <= s["a"]["mean"] <= s["a"]["ci_high"]
    # the twins: same numbers, so no difference, p = 1 and the verdict is "not resolved"
    assert s["a"]["seed_means"] == pytest.approx(s["b"]["seed_means"])
    (v,) = result["verdicts"]
    assert v["verdict"] == stats.UNRESOLVED and v["diff"] == pytest.approx(0.0, abs=1e-12)
    assert v["p"] == pytest.approx(1.0)
    for p in result["pairwise"]:
        assert p["p"] is None or p["p"] == pytest.approx(1.0)  # None: a metric without values (sharpness off)
    md = (out / "table.md").read_text()
    assert "ResNet A" in md and "[" in md and "2x2" in md
    for name in ("forest.png", "contours.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "NOT RESOLVED" in (out / "verdicts.md").read_text()

    # a rerun finds every point done and only reports
    from bnext.study.run import run_study

    report = run_study(load(path), executor="inline", progress=False)
    assert [o.status for o in report.outcomes] == ["skipped"] * 4


def test_bad_configs_are_refused_with_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    path = _config(tmp_path, train_seeds="three")
    assert main([str(path), "--executor", "inline"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: train_seeds must be") and "\n" not in err
    with pytest.raises(StudyConfigError, match="not a variant"):
        from_dict({**TINY, "claims": [{"smoother": "a", "than": "zz"}]})
    with pytest.raises(StudyConfigError, match="unknown variant"):
        from_dict({**TINY, "variants": ["resnet_eighteen"]})
    with pytest.raises(StudyConfigError, match="unknown landscape key"):
        from_dict({**TINY, "landscape": {"gird": "-1:1:3"}})


def test_shipped_study_configs_load():
    root = Path(__file__).resolve().parents[2] / "configs" / "studies"
    fig2 = load(root / "fig2_digits.yaml")
    assert len(fig2.variants) == 7 and len(fig2.train_seeds) >= 3 and len(fig2.direction_seeds) >= 5
    assert fig2.claims and all(c.metric == "roughness" for c in fig2.claims)
    assert load(root / "tiny.yaml").fingerprint() != fig2.fingerprint()
