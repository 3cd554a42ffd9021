"""Tables for papers (Markdown, LaTeX booktabs, CSV) and the sweep summary figure (bars from 0)."""

import csv

import pytest

from bnext.ablate import write_result
from bnext.ablate.results import latex_table, write_tables
from bnext.ablate.summary import write_summary


def test_latex_table_booktabs_and_escaping(tmp_path):
    rows = [{"model": "BNext-18 (Info-RCP + ELM)", "top1": 91.25, "note": "a_b & 5% ± x"},
            {"model": "ResNet-18 \u00d70.25", "top1": 97.5, "note": None}]
    tex = latex_table(rows, ["model", "top1", "note"], caption="Top-1 on digits")
    lines = tex.splitlines()
    assert lines.index("\\toprule") < lines.index("\\midrule") < lines.index("\\bottomrule")
    assert "\\begin{tabular}{lrl}" in tex  # text left, numbers right
    assert "Model & Top-1 (\\%) & note \\\\" in tex
    assert "a\\_b \\& 5\\% $\\pm$ x" in tex and "ResNet-18 $\\times$0.25" in tex
    assert "\\caption{Top-1 on digits}" in tex
    paths = write_tables(rows, ["model", "top1"], tmp_path / "t")
    assert {p.suffix for p in paths.values()} == {".md", ".tex", ".csv"}
    assert "| BNext-18 (Info-RCP + ELM) | 91.25 |" in paths["markdown"].read_text()
    with open(paths["csv"]) as fh:
        got = list(csv.DictReader(fh))
    assert [r["top1"] for r in got] == ["91.25", "97.5"] and got[0]["note"] == "a_b & 5% ± x"


def test_summary_table_tex_and_bars_from_zero(tmp_path, monkeypatch):
    from landscape.figures import style

    for k, (variant, top1) in enumerate([("on", 92.0), ("on", 94.0), ("off", 88.0)]):
        run = tmp_path / f"run{k}"
        run.mkdir()
        write_result(run, notebook="toy", parameters={"variant": variant, "seed": k},
                     rows=[{"variant": variant, "top1": top1}], index=["variant"], columns=["top1"], title="Toy")
    figures = []
    real = style.save
    monkeypatch.setattr(style, "save", lambda fig, out, formats=None, dpi=200: (figures.append(fig),
                                                                                real(fig, out, formats, dpi))[1])
    written = write_summary(tmp_path, formats=("png", "pdf"))
    tex = written["latex"].read_text()
    assert "93.00 $\\pm$ 1.41" in tex and "\\toprule" in tex and "88.00 (n = 1)" in tex
    assert written["figure"].suffix == ".png" and written["figure"].with_suffix(".pdf").exists()
    ax = figures[0].axes[0]
    assert ax.get_xlim()[0] == 0.0  # bar lengths are the values: the axis starts at 0
    assert [round(p.get_width(), 6) for p in ax.patches] == [93.0, 88.0]
    assert ax.get_title() == "Toy"
    with pytest.raises(ValueError, match="unknown figure format"):
        style.parse_formats("gif")
