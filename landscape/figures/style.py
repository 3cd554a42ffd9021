"""One figure style for the whole workbench (landscape figures, ablation summaries, training curves).

Paper-ready defaults in one place: :data:`RC` (matplotlib rcParams: fonts embedded in vector output
as TrueType, ``pdf.fonttype = 42`` / ``ps.fonttype = 42``, SVG text kept as text), rounded contour
levels and colour-bar ticks (:func:`nice_levels`, :func:`nice_colorbar`, ``MaxNLocator`` with steps
1, 2, 2.5, 5), panel letters (:func:`panel_letter`), titles and axis labels built from metadata
(:func:`model_display_name`, :func:`quantity_label`, :func:`axis_labels`) and saving one figure in
several formats (:func:`save`, ``--format png,pdf,svg`` and ``--dpi`` via :func:`add_output_args`).

Dependencies: matplotlib and numpy only, never ``landscape`` or ``bnext`` modules, so any drawing
code can use it. ``landscape`` (the lower layer) imports it at module import; ``bnext`` imports it
*inside* its drawing functions only (``bnext.ablate.figures``/``summary``, ``bnext.train.curves``),
like every other ``bnext -> landscape`` use: the arrow points one way (``landscape`` never imports
``bnext``) and importing ``bnext`` never imports ``landscape`` or matplotlib.

Figures are ``matplotlib.figure.Figure`` objects built inside :func:`context` (``rc_context``) and
rendered by Agg, so nothing here changes the global pyplot backend or a notebook's own style.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("png", "pdf", "svg")
DEFAULT_FORMATS = ("png", "pdf")
DEFAULT_DPI = 200
NICE_STEPS = (1, 2, 2.5, 5, 10)

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: identical output on every machine
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 11,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.5,
    "image.cmap": "viridis",
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "pdf.fonttype": 42,  # TrueType, embedded: text stays text and editable in the PDF
    "ps.fonttype": 42,
    "svg.fonttype": "none",  # SVG text as <text> (fonts named, not outlined)
    "axes.formatter.useoffset": False,
    "axes.formatter.limits": (-4, 5),
}

# Display names of the registry's models and of the options that name a variant (Table 4 wording).
MODEL_NAMES: dict[str, str] = {
    "resnet18": "ResNet-18",
    "binarynet18": "BinaryNet-18",
    "xnornet18": "XNOR-Net-18",
    "bireal18": "Bi-Real-18",
    "real2binary18": "Real2Binary-18",
    "bnext18": "BNext-18",
    "bnext_t": "BNext-T",
    "bnext_s": "BNext-S",
    "bnext_m": "BNext-M",
    "bnext_l": "BNext-L",
}
SWITCH_NAMES: dict[str, str] = {"info_rcp": "Info-RCP", "elm_attention": "ELM"}
VALUE_NAMES: dict[str, str] = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_acc": "train accuracy (%)",
    "test_acc": "test accuracy (%)",
}
NORMALIZATION_NAMES: dict[str, str] = {
    "filter": "filter-normalized",
    "layer": "layer-normalized",
    "none": "unnormalized",
    "file": "from file",
}


@contextlib.contextmanager
def context(extra: Mapping[str, Any] | None = None) -> Iterator[None]:
    """``matplotlib.rc_context`` with :data:`RC` (plus ``extra``); build *and* save figures inside it."""
    import matplotlib

    with matplotlib.rc_context({**RC, **dict(extra or {})}):
        yield


def figure(*, width: float | None = None, **kw: Any) -> Any:
    """A ``matplotlib.figure.Figure`` (Agg, no pyplot state); call inside :func:`context`.

    ``width`` (inches, e.g. :data:`SINGLE_COLUMN` or :data:`DOUBLE_COLUMN`) scales ``figsize`` to the
    printed width, so the fonts of :data:`RC` (8 pt ticks) are their size on paper.
    """
    from matplotlib.figure import Figure

    if width is not None:
        w, h = kw.get("figsize") or (6.4, 4.8)
        kw["figsize"] = (float(width), float(width) * h / w)
    return Figure(**kw)


#: printed widths (inches) of a single and a double journal column
SINGLE_COLUMN, DOUBLE_COLUMN = 3.5, 7.0
#: decades a surface's values span above which figures use a log scale by default
LOG_DECADES = 2.0


def spans_decades(values: np.ndarray | Sequence[np.ndarray], decades: float = LOG_DECADES) -> bool:
    """Whether positive values span more than ``decades`` decades (then a log scale shows them)."""
    arrays = [np.asarray(v, dtype=float).ravel() for v in (values if isinstance(values, list | tuple) else [values])]
    finite = np.concatenate(arrays) if arrays else np.zeros(0)
    finite = finite[np.isfinite(finite)]
    if finite.size < 2 or (finite <= 0).any():
        return False
    return bool(np.log10(finite.max() / finite.min()) > decades)


# ----------------------------------------------------------------------------- numbers
def nice_levels(values: np.ndarray | Sequence[np.ndarray], n: int = 12) -> np.ndarray:
    """About ``n`` contour levels on round numbers (steps 1, 2, 2.5, 5 x 10^k) spanning the finite values."""
    from matplotlib.ticker import MaxNLocator

    arrays = [values] if isinstance(values, np.ndarray) else list(values)
    finite = np.concatenate([np.asarray(v, dtype=float)[np.isfinite(v)].ravel() for v in arrays])
    if finite.size == 0:
        raise ValueError("no finite values to draw")
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo <= 1e-12 * max(1.0, abs(lo)):
        pad = 0.5 * abs(lo) if lo else 0.5
        lo, hi = lo - pad, hi + pad
    levels = MaxNLocator(nbins=n, steps=list(NICE_STEPS)).tick_values(lo, hi)
    # from the last level at or below the minimum to the first at or above the maximum
    start = levels[levels <= lo].max(initial=levels[0])
    stop = levels[levels >= hi].min(initial=levels[-1])
    return _clean(levels[(levels >= start) & (levels <= stop)])


def _clean(levels: np.ndarray) -> np.ndarray:
    """Round away binary noise (0.30000000000000004 -> 0.3) so labels print as the nice number."""
    step = float(np.min(np.diff(levels))) if levels.size > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step)) + 2) if step > 0 else 6
    return np.round(levels, digits)


def nice_locator(n: int = 6) -> Any:
    """A ``MaxNLocator`` on round numbers (for colour bars and crowded axes)."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=n, steps=list(NICE_STEPS))


def nice_colorbar(fig: Any, mappable: Any, *, label: str, n: int = 6, ticks: Sequence[float] | None = None,
                  **kw: Any) -> Any:
    """A colour bar with a label and at most ``n`` round-number ticks (or the given ``ticks``, e.g.
    the levels of contour lines); every 2D and 3D figure has one."""
    cb = fig.colorbar(mappable, **kw)
    cb.set_label(label)
    if ticks is not None:
        step = max(1, math.ceil(len(ticks) / (n + 1)))
        cb.set_ticks(list(ticks)[::step])
    else:
        cb.locator = nice_locator(n)
        cb.update_ticks()
    return cb


def panel_letter(ax: Any, index: int, *, three_d: bool = False, outside: bool = False) -> None:
    """Bold ``(a)``, ``(b)``, ... at a panel's top-left corner: inside on a white box (maps, where the
    corner is background) or, with ``outside``, above the axes' left end (line charts, whose data can
    reach any corner)."""
    letter = f"({chr(ord('a') + index)})"
    kw: dict[str, Any] = {"fontweight": "bold", "fontsize": 10, "ha": "left", "transform": ax.transAxes,
                          "zorder": 10}
    if three_d:
        ax.text2D(0.0, 1.0, letter, va="top", **kw)
    elif outside:
        ax.annotate(letter, (0, 1), xycoords="axes fraction", xytext=(-28, 6), textcoords="offset points",
                    va="bottom", ha="left", fontweight="bold", fontsize=10, annotation_clip=False)
    else:
        box = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}
        ax.text(0.03, 0.97, letter, va="top", bbox=box, **kw)


def wrap(text: str, width: int = 32) -> str:
    """A long panel title on several lines."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


# ----------------------------------------------------------------------------- words
def model_display_name(spec: Any) -> str | None:
    """``{"name": "bnext18", "options": {...}}`` (a ``model.spec``) -> ``"BNext-18 (Info-RCP + ELM)"``.

    Width multipliers other than 1 show as ``"x0.25"``; the Info-RCP/ELM switches (paper Table 4)
    as ``"(Info-RCP + ELM)"``, ``"(Info-RCP only)"``, ``"(ELM only)"`` or ``"(no Info-RCP, no ELM)"``.
    Returns None when ``spec`` names no model.
    """
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not spec.get("name"):
        return None
    name = str(spec["name"])
    opts = spec.get("options") or {}
    text = MODEL_NAMES.get(name, name)
    width = opts.get("width")
    if isinstance(width, int | float) and not isinstance(width, bool) and width != 1:
        text += f" \u00d7{width:g}"
    switches = [(label, opts[key]) for key, label in SWITCH_NAMES.items() if isinstance(opts.get(key), bool)]
    on = [label for label, value in switches if value]
    if switches:
        if len(on) == len(switches):
            text += f" ({' + '.join(on)})"
        elif on:
            text += f" ({' + '.join(on)} only)"
        else:
            text += f" ({', '.join('no ' + label for label, _ in switches)})"
    return text


def quantity_label(key: str, log: bool = False) -> str:
    """``"train_loss"`` -> ``"train loss"``; with ``log`` -> ``"train loss (log10)"``."""
    text = VALUE_NAMES.get(key, key.replace("_", " "))
    return f"{text} (log10)" if log else text


def axis_labels(kind: str | None, info: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """What the x and y axes of a surface are, from its direction kind and ``/directions`` attributes.

    ``pca`` -> ``"PC1 (87.3%)"`` from ``explained_variance_ratio``; ``interpolate`` ->
    ``"interpolation coefficient"``; ``plane`` -> the model differences; random and file directions
    -> ``"direction 1 (filter-normalized)"``.
    """
    info = dict(info or {})
    kind = kind or info.get("kind")
    if kind == "pca":
        ratio = info.get("explained_variance_ratio") or []
        if isinstance(ratio, str):  # stored as a JSON attribute
            try:
                ratio = json.loads(ratio)
            except ValueError:
                ratio = []
        pcs = []
        for k in range(2):
            r = ratio[k] if k < len(ratio) else None
            pcs.append(f"PC{k + 1} ({100 * float(r):.1f}%)" if isinstance(r, int | float) else f"PC{k + 1}")
        return pcs[0], pcs[1]
    if kind == "interpolate":
        return "interpolation coefficient (0 = A, 1 = B)", "y"
    if kind == "plane":  # landscape.directions.plane_directions: oblique (Li et al.) or orthogonalized
        if info.get("orthogonalized") in (True, 1, "true", "True"):
            return "coefficient of B \u2212 A", "coefficient of C \u2212 A orthogonal to B \u2212 A"
        return "coefficient of B \u2212 A", "coefficient of C \u2212 A"
    if kind == "connect":  # landscape.connect: a curve or the line between two models
        return f"t along the {info.get('path', 'path')} (0 = A, 1 = B)", "y"
    if kind == "flips":  # bnext.packed.flips
        return f"fraction of weight signs flipped ({info.get('scope', 'network')}, {info.get('order', '')} order)", "y"
    norm = NORMALIZATION_NAMES.get(str(info.get("normalization")), None)
    suffix = f" ({norm})" if norm else ""
    return f"direction 1{suffix}", f"direction 2{suffix}"


# ----------------------------------------------------------------------------- output
def parse_formats(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"png,pdf,svg"`` (or a list) -> ``("png", "pdf", "svg")``; None -> :data:`DEFAULT_FORMATS`."""
    if spec is None:
        return DEFAULT_FORMATS
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in items:
        f = item.strip().lower().lstrip(".")
        if not f:
            continue
        if f not in FORMATS:
            raise ValueError(f"unknown figure format {item!r}; choose from {', '.join(FORMATS)} (e.g. png,pdf)")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError(f"no figure format given; choose from {', '.join(FORMATS)} (e.g. png,pdf)")
    return tuple(out)


def outputs(out: str | os.PathLike[str], formats: Sequence[str] | None) -> list[Path]:
    """The files :func:`save` writes for ``out``: one per format (``None``: just ``out``)."""
    out = Path(out)
    if formats is None:
        return [out]
    return [out.with_suffix(f".{f}") for f in formats]


def save(fig: Any, out: str | os.PathLike[str], formats: Sequence[str] | None = None,
         dpi: int = DEFAULT_DPI) -> Path:
    """Save ``fig`` as ``out`` with each format's suffix; returns the first file (the PNG by default).

    ``formats=None`` saves just ``out`` as named. Call inside :func:`context` (fonts embedded).
    """
    paths = outputs(out, formats)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    with context():
        for path in paths:
            fig.savefig(path, dpi=dpi, metadata=_metadata(path))
    return paths[0]


def _metadata(path: Path) -> dict[str, Any] | None:
    # reproducible vector files: no creation date in PDF/SVG
    if path.suffix == ".pdf":
        return {"CreationDate": None}
    if path.suffix == ".svg":
        return {"Date": None}
    return None


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--format png,pdf,svg``, ``--dpi`` and ``--width`` (printed inches) for a command that draws."""
    parser.add_argument("--width", type=float, default=None, metavar="INCHES",
                        help=f"printed figure width in inches, e.g. {SINGLE_COLUMN} (one column) or "
                             f"{DOUBLE_COLUMN} (two): fonts are then their size on paper (default: screen size)")
    parser.add_argument("--format", dest="formats", default=",".join(DEFAULT_FORMATS), type=_formats_arg,
                        help=f"figure formats, comma-separated from {','.join(FORMATS)} (default: "
                             f"{','.join(DEFAULT_FORMATS)})")
    parser.add_argument("--dpi", type=_dpi_arg, default=DEFAULT_DPI,
                        help=f"resolution of raster (PNG) output (default {DEFAULT_DPI})")


def _formats_arg(text: str) -> tuple[str, ...]:
    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dpi_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dpi {text!r} must be a whole number, e.g. 300") from None
    if not 10 <= value <= 2400:
        raise argparse.ArgumentTypeError(f"--dpi {value} is out of range; use 10..2400 (300 for print)")
    return value
