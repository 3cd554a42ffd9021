"""Curvature per block: the top Hessian eigenvalue and trace of each stage/block of a network.

PyHessian's users draw where the curvature sits, block by block (the Hessian-aware bit allocation of
HAWQ, Dong et al. 2019, ranks layers by their top eigenvalue and trace). For block ``b`` the numbers
are those of the diagonal block ``H_bb`` of the Hessian (the curvature with every other parameter
held fixed), computed with :class:`landscape.curvature.hessian.Hessian` restricted to the block's
parameters: the top eigenvalue by Lanczos (with its residual) and the trace by Hutchinson's estimator
(with its standard error). Because ``tr H = sum_b tr H_bb`` exactly, the block traces of a partition
add up to the whole trace; each block draws its own probes (seed ``seed + index``), so the sum's
standard error is ``sqrt(sum_b se_b^2)``.

Blocks (:func:`find_blocks`): ``auto`` follows the module structure: the top-level children, with a
child that is a container (``nn.Sequential``/``nn.ModuleList``) of at least two composite modules
(residual blocks, stages) opened into those modules, one level deep, so a zoo model gives ``stem``,
``blocks.0`` ... ``blocks.5``, ``head`` and a torchvision ResNet ``conv1``, ``bn1``, ``layer1.0`` ...
``fc``; ``children``: the top-level children; or your own grouping ``{name: [parameter-name
prefixes]}`` (parameters no prefix claims form the block ``other``). Parameters held directly by the
root module form the block ``(root)``. Every selected parameter belongs to exactly one block.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from .hessian import Hessian, LossFn, ParamSelector, as_dataset, select_parameters

__all__ = ["BlockCurvature", "BlockReport", "block_curvature", "find_blocks", "parse_grouping", "plot_blocks"]

Grouping = str | Mapping[str, Sequence[str]] | None
_CONTAINERS = (nn.Sequential, nn.ModuleList)


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _module_units(model: nn.Module, grouping: str) -> list[tuple[str, nn.Module]]:
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if not _has_params(child):
            continue
        inner = [(f"{name}.{n}", c) for n, c in child.named_children() if _has_params(c)]
        composite = [c for _, c in inner if any(True for _ in c.children())]
        if grouping == "auto" and isinstance(child, _CONTAINERS) and len(composite) >= 2:
            units.extend(inner)  # a stage (or the body) of residual blocks: one row per block
        else:
            units.append((name, child))
    return units


def find_blocks(model: nn.Module, grouping: Grouping = "auto") -> dict[str, list[str]]:
    """``{block: [parameter names]}`` in depth order (see the module docstring); a partition of the parameters."""
    names = [n for n, _ in model.named_parameters()]
    if grouping is None:
        grouping = "auto"
    blocks: dict[str, list[str]] = {}
    if isinstance(grouping, str):
        if grouping not in ("auto", "children"):
            raise ValueError(f"blocks {grouping!r}: expected 'auto', 'children' or {{name: [prefixes]}}")
        owner: dict[str, str] = {}
        for unit, module in _module_units(model, grouping):
            for n, _ in module.named_parameters():
                owner.setdefault(f"{unit}.{n}", unit)
        for n in names:
            blocks.setdefault(owner.get(n, "(root)"), []).append(n)
        order = [u for u, _ in _module_units(model, grouping)]
        return {b: blocks[b] for b in sorted(blocks, key=lambda b: order.index(b) if b in order else -1)}
    groups = {str(k): [str(p) for p in v] for k, v in grouping.items()}
    if not groups:
        raise ValueError("the block grouping is empty")
    for block, prefixes in groups.items():
        if not prefixes:
            raise ValueError(f"block {block!r} has no parameter-name prefix")
        for p in prefixes:
            if not any(n == p or n.startswith(p.rstrip(".") + ".") for n in names):
                raise ValueError(f"block {block!r}: prefix {p!r} matches no parameter (the model has e.g. "
                                 f"{names[:4]})")
    for n in names:
        hit = next((b for b, ps in groups.items() if any(n == p or n.startswith(p.rstrip(".") + ".") for p in ps)),
                   "other")
        blocks.setdefault(hit, []).append(n)
    return {b: blocks[b] for b in [*groups, "other"] if b in blocks}


def parse_grouping(items: Sequence[str]) -> dict[str, list[str]]:
    """``["body=blocks.0,blocks.1", "head=head"]`` (the CLI's ``--block``) -> ``{name: [prefixes]}``."""
    grouping: dict[str, list[str]] = {}
    for item in items:
        name, eq, prefixes = item.partition("=")
        parts = [p.strip() for p in prefixes.split(",") if p.strip()]
        if not eq or not name.strip() or not parts:
            raise ValueError(f"--block {item!r} must be NAME=PREFIX[,PREFIX...], e.g. body=blocks.0,blocks.1")
        if name.strip() in grouping:
            raise ValueError(f"--block {item!r}: block {name.strip()!r} is given twice")
        grouping[name.strip()] = parts
    return grouping


@dataclass
class BlockCurvature:
    """One block's row: its top eigenvalue (Lanczos residual bounds the error) and trace (± standard error)."""

    block: str
    depth: int
    parameters: int
    tensors: int
    top_eig: float | None = None
    eig_residual: float | None = None
    eig_converged: bool | None = None
    trace: float | None = None
    trace_stderr: float | None = None
    trace_probes: int | None = None
    hvps: int = 0
    seconds: float = 0.0


@dataclass
class BlockReport:
    """Per-block rows, the blocks' parameter names, and the sum of the block traces with its standard error."""

    rows: list[BlockCurvature]
    blocks: dict[str, list[str]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def trace_sum(self) -> tuple[float, float] | None:
        """``(sum of block traces, its standard error)``: equals the whole trace in expectation."""
        if any(r.trace is None for r in self.rows):
            return None
        return (float(sum(r.trace for r in self.rows)),  # type: ignore[misc]
                float(math.sqrt(sum((r.trace_stderr or 0.0) ** 2 for r in self.rows))))

    def as_dict(self) -> dict[str, Any]:
        total = self.trace_sum
        return {"format": "landscape-hessian-blocks", "format_version": 1, "settings": self.settings,
                "rows": [asdict(r) for r in self.rows], "blocks": self.blocks,
                "trace_sum": None if total is None else {"estimate": total[0], "stderr": total[1]}}

    def csv_text(self) -> str:
        buf = io.StringIO()
        cols = list(asdict(self.rows[0])) if self.rows else ["block"]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow(asdict(r))
        return buf.getvalue()

    def summary_lines(self) -> list[str]:
        """One line per block, then the sum of the block traces (for the terminal)."""
        lines = []
        for r in self.rows:
            eig = f"top eigenvalue {r.top_eig:.5g}" if r.top_eig is not None else ""
            tr = f"trace {r.trace:.4g} \u00b1 {r.trace_stderr:.2g}" if r.trace is not None else ""
            lines.append(f"  {r.block:<16} {r.parameters:>10,} params: {', '.join(t for t in (eig, tr) if t)}")
        total = self.trace_sum
        if total is not None:
            lines.append(f"  sum of block traces {total[0]:.5g} \u00b1 {total[1]:.2g} (standard error; equals the "
                         "whole trace in expectation)")
        return lines

    def write(self, out: str | os.PathLike[str], *, title: str | None = None,
              formats: Sequence[str] | None = ("png", "pdf")) -> dict[str, Path]:
        """``<out>.json``, ``<out>.csv`` and the figure ``<out>.png``/``.pdf``; returns the paths by kind."""
        base = Path(out)
        base.parent.mkdir(parents=True, exist_ok=True)
        paths = {"json": base.with_suffix(".json"), "csv": base.with_suffix(".csv")}
        _replace(paths["json"], json.dumps(_plain(self.as_dict()), indent=2) + "\n")
        _replace(paths["csv"], self.csv_text())
        paths["figure"] = plot_blocks(self, base.with_suffix(".png"), title=title, formats=formats)
        return paths


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` (created under the umask), then rename it over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def block_curvature(
    model: nn.Module,
    data: tuple[Tensor, Tensor] | Mapping[str, tuple[Tensor, Tensor]],
    blocks: Grouping = "auto",
    *,
    params: ParamSelector = "all",
    loss_fn: LossFn | None = None,
    top_eig: bool = True,
    probes: int = 50,
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: Callable[[str, int, int], None] | None = None,
) -> BlockReport:
    """Top eigenvalue and Hutchinson trace of every block's diagonal Hessian block (module docstring).

    ``blocks``: ``"auto"``, ``"children"`` or ``{name: [parameter-name prefixes]}``; ``params`` restricts
    the parameters as in :class:`~landscape.curvature.hessian.Hessian` (blocks left empty are skipped);
    ``probes=0`` skips the trace, ``top_eig=False`` the eigenvalue. ``progress(block, index, count)`` is
    called before each block.
    """
    if probes == 1 or probes < 0:
        raise ValueError(f"probes must be 0 (no trace) or >= 2 (for a standard error), got {probes}")
    if not top_eig and not probes:
        raise ValueError("nothing to compute: pass top_eig=True or probes >= 2")
    chosen = {n for n, _ in select_parameters(model, params)}
    groups = {b: [n for n in ns if n in chosen] for b, ns in find_blocks(model, blocks).items()}
    groups = {b: ns for b, ns in groups.items() if ns}
    rows = []
    for k, (block, names) in enumerate(groups.items()):
        if progress is not None:
            progress(block, k, len(groups))
        h = Hessian(model, data, loss_fn=loss_fn, params=names, batch_size=batch_size)
        row = BlockCurvature(block, k, h.dim, len(names))
        if top_eig:
            eig = h.top_eigenvalues(1, tol=tol, max_iter=max_iter, seed=seed + k)
            row.top_eig, row.eig_residual, row.eig_converged = eig.values[0], eig.residuals[0], eig.converged
            row.seconds += eig.seconds
        if probes:
            tr = h.trace(probes, seed=seed + k)
            row.trace, row.trace_stderr, row.trace_probes = tr.estimate, tr.stderr, tr.probes
            row.seconds += tr.seconds
        row.hvps = h.hvp_count
        row.seconds = round(row.seconds, 3)
        h.release()
        rows.append(row)
    settings = {"blocks": blocks if isinstance(blocks, str | type(None)) else dict(blocks), "probes": probes,
                "tol": tol, "max_iter": max_iter, "seed": seed, "samples": int(as_dataset(data)[0].shape[0])}
    return BlockReport(rows, groups, settings)


def plot_blocks(report: BlockReport, out: str | os.PathLike[str], *, title: str | None = None,
                formats: Sequence[str] | None = ("png", "pdf"), dpi: int | None = None) -> Path:
    """Top eigenvalue (± its Lanczos residual) and trace (± 1 standard error) per block against depth, two
    panels; returns the PNG."""
    from ..figures import style

    rows = report.rows
    x = np.arange(len(rows))
    labels = [r.block for r in rows]
    panels = [(r, lab) for r, lab in (("top_eig", "top eigenvalue"), ("trace", "trace (Hutchinson)"))
              if any(getattr(row, r) is not None for row in rows)]
    with style.context():
        fig = style.figure(figsize=(max(5.0, 0.45 * len(rows) + 2.5), 1.2 + 2.3 * len(panels)), layout="constrained")
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (attr, label) in zip(axes, panels):
            y = np.array([np.nan if getattr(r, attr) is None else getattr(r, attr) for r in rows], dtype=float)
            if attr == "trace":
                err = np.array([r.trace_stderr or 0.0 for r in rows], dtype=float)
                ax.errorbar(x, y, yerr=err, fmt="o-", color="C1", capsize=3, markersize=4,
                            label="estimate \u00b1 1 standard error")
                ax.legend(loc="best")
            else:  # the Lanczos residual bounds |theta - lambda|
                res = np.array([np.nan if r.eig_residual is None else r.eig_residual for r in rows], dtype=float)
                low = np.where(y > 0, np.minimum(res, 0.999 * np.abs(y)), res)  # keeps log axes drawable
                ax.errorbar(x, y, yerr=[low, res], fmt="o-", color="C0", capsize=3, markersize=4,
                            label="Ritz value \u00b1 residual (error bound)")
                ax.legend(loc="best")
            mags = np.abs(y[np.isfinite(y) & (y != 0)])
            if mags.size and mags.max() / mags.min() > 30:  # curvature spans decades from input to output
                if bool(np.nanmin(y) > 0):
                    ax.set_yscale("log")
                else:  # Hutchinson estimates can be negative: symmetric log, linear near 0
                    ax.set_yscale("symlog", linthresh=float(mags.min()))
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
        axes[-1].set_xticks(x, labels, rotation=45, ha="right")
        axes[-1].set_xlabel("block (input \u2192 output)")
        fig.suptitle(title or "Hessian curvature per block")
        return style.save(fig, out, formats, dpi or style.DEFAULT_DPI)
