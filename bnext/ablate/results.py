"""The ``result.json`` every notebook run writes, and small helpers to build it.

Schema (``format: bnext-ablation-result``, ``version: 1``)::

    {"format": "bnext-ablation-result", "version": 1,
     "notebook": "module_ablation",          # which notebook (names the paper table)
     "parameters": {...},                    # the notebook's parameters as it ran (the runner compares
                                             # these with the grid point to skip completed runs)
     "table": {"title": "Table 4 ...",       # how the paper lays the table out:
               "index": ["info_rcp", "elm_attention"],   # row keys
               "columns": ["top1"]},                     # metrics shown (mean +- std over seeds)
     "rows": [{"info_rcp": true, "elm_attention": false, "top1": 91.2, ...}, ...],
     "figures": {"name": "relative/path.png", ...},
     "files": {...}, "seconds": 12.3, "created": "..."}
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_open

FORMAT = "bnext-ablation-result"
VERSION = 1


def _plain(value: Any) -> Any:
    """JSON-ready plain types (numpy/torch scalars, paths, tuples; non-finite floats -> None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON to a temp file in the same folder, then rename (readers never see half a file)."""
    with atomic_open(path, "w") as fh:
        json.dump(_plain(obj), fh, indent=2, sort_keys=False)
        fh.write("\n")
    return Path(path)


def as_list(value: Any) -> list[Any]:
    """A notebook parameter that may be one item or a list of items, as a list."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def write_result(
    out_dir: str | os.PathLike[str],
    *,
    notebook: str,
    parameters: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    index: Sequence[str],
    columns: Sequence[str],
    title: str = "",
    figures: Mapping[str, str | os.PathLike[str]] | None = None,
    files: Mapping[str, str | os.PathLike[str]] | None = None,
    **extra: Any,
) -> Path:
    """Write ``<out_dir>/result.json`` (see the module docstring); paths are stored relative to ``out_dir``.

    In the tasks other than the first of a several-task cluster job (``RANK`` > 0) nothing is written:
    task 0 owns the point's result."""
    out_dir = Path(out_dir)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return out_dir / "result.json"
    missing = [c for c in list(index) + list(columns) if rows and any(c not in r for r in rows)]
    if missing:
        raise ValueError(f"result rows lack the table column(s) {sorted(set(missing))}")

    def rel(p: str | os.PathLike[str]) -> str:
        p = Path(p)
        try:
            return str(p.resolve().relative_to(out_dir.resolve()))
        except ValueError:
            return str(p)

    result = {
        "format": FORMAT,
        "version": VERSION,
        "notebook": notebook,
        "parameters": dict(parameters),
        "table": {"title": title, "index": list(index), "columns": list(columns)},
        "rows": [dict(r) for r in rows],
        "figures": {k: rel(v) for k, v in (figures or {}).items()},
        "files": {k: rel(v) for k, v in (files or {}).items()},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    return atomic_write_json(out_dir / "result.json", result)


def read_result(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a ``result.json`` (clear error for a foreign or broken file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable result.json ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an ablation result (expected format={FORMAT!r}, written by "
                         f"bnext.ablate.write_result)")
    if not isinstance(data.get("rows"), list) or not isinstance(data.get("parameters"), dict):
        raise ValueError(f"{path}: result.json lacks 'rows' (list) or 'parameters' (mapping)")
    return data


def default_out_dir(ablation: str, out_dir: str | os.PathLike[str] | None = None, *,
                    root: str | os.PathLike[str] | None = None) -> Path:
    """``out_dir`` if given (see :func:`bnext.ablate.paths.output_path`), else ``<root>/<ablation>/<timestamp>``
    with ``root`` the repository's ``runs/`` (created)."""
    from .paths import output_path, runs_root

    if out_dir:
        path = output_path(out_dir)
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(root if root is not None else runs_root()) / ablation / stamp
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cell(v: Any) -> str:
    """A table cell: floats to 4 significant digits, booleans yes/no, None empty."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub Markdown table of ``rows`` (floats to 4 significant digits)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


#: column headers of the LaTeX tables (others: underscores become spaces)
COLUMN_TITLES = {
    "model": "Model", "params": "Params", "top1": "Top-1 (\\%)", "top5": "Top-5 (\\%)",
    "final_top1": "Final top-1 (\\%)", "delta_top1": "$\\Delta$ top-1", "loss_centre": "Loss at centre",
    "roughness": "Roughness", "convexity_share": "Convex share", "basin_width_x": "Basin width $x$",
    "basin_width_y": "Basin width $y$", "basin_diameter": "Basin diameter", "train_seconds": "Train (s)",
    "info_rcp": "Info-RCP", "elm_attention": "ELM", "n": "$n$",
}
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "×": r"$\times$", "Δ": r"$\Delta$", "—": "---", "−": "$-$"}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX table cell (``±``, ``×`` as math)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def _numeric(text: str) -> bool:
    head = text.split(" ± ")[0].strip()
    try:
        float(head)
    except ValueError:
        return head in ("", "nan", "n/a")
    return True


def latex_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, caption: str | None = None,
                label: str | None = None) -> str:
    """A booktabs LaTeX table (``\\usepackage{booktabs}``) of ``rows``: numbers right-aligned,
    text left-aligned, cells formatted as in :func:`markdown_table`."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    align = "".join("r" if cells and all(_numeric(row[k]) for row in cells) else "l" for k in range(len(columns)))
    head = " & ".join(COLUMN_TITLES.get(c, latex_escape(c.replace("_", " "))) for c in columns)
    lines = ["\\begin{table}[t]", "\\centering"]
    if caption:
        lines.append(f"\\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(f"\\label{{{label}}}")
    lines += [f"\\begin{{tabular}}{{{align}}}", "\\toprule", head + " \\\\", "\\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in cells]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], base: str | os.PathLike[str], *,
                 csv_fields: Sequence[str] | None = None, caption: str | None = None,
                 markdown_prefix: str = "") -> dict[str, Path]:
    """``<base>.md`` (Markdown), ``<base>.tex`` (booktabs) of the ``columns`` and ``<base>.csv`` of
    ``csv_fields`` (default: every key of the rows, lists and dicts as JSON); all written atomically."""
    base = Path(base)
    paths = {"markdown": base.with_suffix(".md"), "latex": base.with_suffix(".tex"), "csv": base.with_suffix(".csv")}
    with atomic_open(paths["markdown"], "w") as fh:
        fh.write(markdown_prefix + markdown_table(rows, columns))
    with atomic_open(paths["latex"], "w") as fh:
        fh.write(latex_table(rows, columns, caption=caption))
    if csv_fields is None:
        csv_fields = list(dict.fromkeys(k for r in rows for k in r)) or list(columns)
    with atomic_open(paths["csv"], "w") as fh:  # "\r\n" rows as csv writes them (no newline translation on POSIX)
        writer = csv.DictWriter(fh, fieldnames=list(csv_fields), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(_plain(v)) if isinstance(v, list | dict) else v for k, v in r.items()})
    return paths
