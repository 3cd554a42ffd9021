"""Collect the ``result.json`` files of a sweep into ``summary.csv``, a paper-style Markdown table and a figure.

Rows of all runs are pooled; a table row is one combination of the result's ``table.index`` keys
and of every parameter that differs between runs, except ``seed`` (runs that differ only by seed
are repetitions). Each metric column shows ``mean ± std`` over those repetitions (sample standard
deviation) and ``n`` says how many went in; a single run shows ``(n = 1)``, not a spread of zero.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_open
from .grid import normalized
from .results import latex_table, markdown_table, read_result

#: parameters that never split table rows (repetitions, bookkeeping)
REPEAT_PARAMETERS = ("seed", "out_dir")


def collect(out: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(results, failures)`` of the run folders directly under ``out`` (sorted by folder name)."""
    out = Path(out)
    results, failures = [], []
    for run_dir in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        if (run_dir / "result.json").is_file():
            try:
                res = read_result(run_dir / "result.json")
            except ValueError as exc:
                failures.append({"run_id": run_dir.name, "status": "error", "message": str(exc)})
                continue
            res["run_id"] = run_dir.name
            results.append(res)
        elif (run_dir / "failure.json").is_file():
            try:
                fail = json.loads((run_dir / "failure.json").read_text())
            except ValueError:
                fail = {"status": "error", "message": "unreadable failure.json"}
            fail["run_id"] = run_dir.name
            failures.append(fail)
    return results, failures


def flat_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per result row: ``run_id``, the run's parameters, then the row's own keys (which win)."""
    rows = []
    for res in results:
        params = {k: v for k, v in res["parameters"].items() if k != "out_dir"}
        for r in res["rows"]:
            rows.append({"run_id": res["run_id"], "notebook": res.get("notebook", ""), **params, **r})
    return rows


def _key(value: Any) -> str:
    return json.dumps(normalized(value), sort_keys=True)


def group_keys(results: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """``(index, columns)``: row keys (table index + varying parameters except seed) and metric columns."""
    index: list[str] = []
    columns: list[str] = []
    for res in results:
        table = res.get("table") or {}
        for k in table.get("index", []):
            if k not in index:
                index.append(k)
        for k in table.get("columns", []):
            if k not in columns:
                columns.append(k)
    names: list[str] = []
    for res in results:
        for k in res["parameters"]:
            if k not in names:
                names.append(k)
    for name in names:
        if name in REPEAT_PARAMETERS or name in index or name in columns:
            continue
        if len({_key(res["parameters"].get(name)) for res in results}) > 1:
            index.append(name)
    if not columns:  # fall back to every numeric key of the rows
        for row in flat_rows(results):
            for k, v in row.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in index + columns \
                        and k not in REPEAT_PARAMETERS:
                    columns.append(k)
    return index, columns


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def aggregate(rows: Sequence[Mapping[str, Any]], index: Sequence[str], columns: Sequence[str]) -> list[dict]:
    """Rows grouped by ``index`` (first-appearance order) with ``<col>_mean``, ``<col>_std``, ``n``."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = _key([row.get(k) for k in index])
        g = groups.setdefault(key, {"keys": {k: row.get(k) for k in index}, "values": {c: [] for c in columns},
                                    "runs": set()})
        g["runs"].add(row.get("run_id"))
        for c in columns:
            v = _number(row.get(c))
            if v is not None:
                g["values"][c].append(v)
    out = []
    for g in groups.values():
        agg: dict[str, Any] = dict(g["keys"])
        for c, vals in g["values"].items():
            n = len(vals)
            mean = sum(vals) / n if n else float("nan")
            # one value has no spread to report (NaN, shown as "n = 1"), not a standard deviation of 0
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
            agg[f"{c}_mean"], agg[f"{c}_std"] = mean, std
        agg["n"] = len(g["runs"])
        out.append(agg)
    return out


def _digits(means: Sequence[float]) -> int:
    """Decimals for a column: 2 when its values reach 1 or more (accuracies, losses), else 4."""
    finite = [abs(m) for m in means if math.isfinite(m)]
    return 2 if finite and max(finite) >= 1 else 4


def _pm(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(std):
        return f"{mean:.{digits}f} (n = 1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _label(keys: Mapping[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "on" if v else "off"
        return str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in keys.items()) or "all"


def write_summary(out: str | os.PathLike[str], *, metric: str | None = None,
                  formats: Sequence[str] = ("png", "pdf"), dpi: int = 200) -> dict[str, Path]:
    """Write ``summary.csv`` (every row of every run), ``summary.md`` (paper-style table with mean ± std,
    failures listed), ``summary.tex`` (the same table, booktabs) and ``summary.png``/``.pdf`` (bar chart
    of the first metric, bars from 0, in ``formats``) into ``out``."""
    out = Path(out)
    results, failures = collect(out)
    rows = flat_rows(results)
    written: dict[str, Path] = {}
    fields: list[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    csv_path = out / "summary.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields or ["run_id"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()})
    written["csv"] = csv_path

    index, columns = group_keys(results) if results else ([], [])
    table = aggregate(rows, index, columns)
    titles = sorted({(res.get("table") or {}).get("title", "") for res in results} - {""})
    md = [f"# {' / '.join(titles) or 'Sweep summary'}", "",
          f"{len(results)} completed run(s), {len(failures)} failed; metrics are mean ± std over repeated runs "
          f"(seeds), n = runs per row.", ""]
    if table:
        digits = {c: _digits([r[f"{c}_mean"] for r in table]) for c in columns}
        shown = [{**{k: r[k] for k in index}, **{c: _pm(r[f"{c}_mean"], r[f"{c}_std"], digits[c]) for c in columns},
                  "n": r["n"]} for r in table]
        md.append(markdown_table(shown, list(index) + list(columns) + ["n"]))
        with atomic_open(out / "summary.tex", "w") as fh:
            fh.write(latex_table(shown, list(index) + list(columns) + ["n"],
                                 caption=f"{' / '.join(titles) or 'Sweep summary'}: mean ± std over n runs"))
        written["latex"] = out / "summary.tex"
    if failures:
        md += ["## Failed runs", "", "| run | status | cell | error |", "|---|---|---|---|"]
        for f in failures:
            err = f"{f.get('error', '')}: {f.get('message', '')}".strip(": ").replace("|", "\\|").replace("\n", " ")
            md.append(f"| {f['run_id']} | {f.get('status', '')} | {f.get('cell_index', '')} | {err[:200]} |")
        md.append("")
    md_path = out / "summary.md"
    md_path.write_text("\n".join(md) + "\n")
    written["markdown"] = md_path
    with open(out / "summary_table.csv", "w", newline="") as fh:
        cols = list(index) + [f"{c}_{s}" for c in columns for s in ("mean", "std")] + ["n"]
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    written["table_csv"] = out / "summary_table.csv"

    metric = metric or (columns[0] if columns else None)
    if table and metric:
        written["figure"] = _figure(table, index, metric, out / "summary.png", " / ".join(titles), formats, dpi)
    return written


def _figure(table: Sequence[Mapping[str, Any]], index: Sequence[str], metric: str, path: Path, title: str,
            formats: Sequence[str] = ("png", "pdf"), dpi: int = 200) -> Path:
    """Horizontal bars of ``metric`` (mean ± std) per row; the axis starts at 0 (bars are lengths)."""
    from landscape.figures import style

    labels = [_label({k: r[k] for k in index}) for r in table]
    means = [r[f"{metric}_mean"] for r in table]
    stds = [r[f"{metric}_std"] for r in table]
    finite = [m for m in means if math.isfinite(m)]
    digits = _digits(finite)
    with style.context():
        fig = style.figure(figsize=(6.5, 0.4 * len(table) + 1.4), layout="constrained")
        ax = fig.add_subplot()
        y = list(range(len(table)))
        errs = [sd if math.isfinite(sd) else 0.0 for sd in stds]
        ax.barh(y, means, xerr=errs, color="#4C72B0", capsize=3, height=0.6, error_kw={"linewidth": 1})
        for yi, m, sd in zip(y, means, stds):
            if math.isfinite(m):
                ax.annotate(_pm(m, sd, digits), (m + (sd if math.isfinite(sd) else 0), yi),
                            xytext=(4, 0), textcoords="offset points", va="center", fontsize=7)
        ax.set_yticks(y, labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric.replace('_', ' ')} (mean ± std over runs)")
        ax.set_title(title or "sweep summary")
        lo = min([0.0, *[m - s for m, s in zip(means, stds) if math.isfinite(m) and math.isfinite(s)]])
        hi = max([m + s for m, s in zip(means, stds) if math.isfinite(m) and math.isfinite(s)], default=1.0)
        if metric.startswith(("top1", "top5", "acc")) and hi <= 100:
            ax.set_xlim(lo, 100.0)  # percentages: the whole scale, bars from 0
        else:
            ax.set_xlim(lo, hi * 1.15 if hi > 0 else 1.0)  # bars from 0; room for the value labels
        ax.xaxis.set_major_locator(style.nice_locator(6))
        ax.spines[["top", "right"]].set_visible(False)
        return style.save(fig, path, formats, dpi)
