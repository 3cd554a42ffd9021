"""Tables of the quantized models: Table 2's "†" size/QOPs/OPs and Table 7's accuracy per spec.

Counting rule of the † size column (:func:`bnext.profile.count`, unchanged): binary conv weights at
1 bit, the weights of quantized layers at their weight bits, every other parameter (biases, BN,
PReLU, shifts, recoupling weights, float convs) at 32 bit; buffers not counted; MiB (2^20 bytes).
Per-channel ``scale``/``offset`` of the quantized weights are metadata and not counted (as in the
paper).  QOPs = MACs of the quantized layers; OPs = FLOPs + BOPs / 64 + QOPs / 8.

Spec per model (:data:`DAGGER_SPECS`): Table 1's ``8/8-4/8-4/8-8/8`` for BNext-T/S/M/L.  BNext-18†
additionally needs its three real 1x1 downsample convs quantized (group D): Table 2 gives it
FLOPs "-" and 135.2e6 QOPs, which only holds with the downsample MACs (19.3e6) counted as QOPs,
and its 2.2 MB is met with D at the SE convs' bits (``4/8``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from torch import nn

from .apply import calibrate, quantize
from .spec import PAPER_SPEC, TABLE7_SPECS, parse_spec, with_options
from .tune import finetune, run_evaluate

#: paper Table 2, "†" rows: size (MB column), QOPs, OPs, BOPs
PAPER_DAGGER = {
    "bnext18": {"size": 2.2, "qops": 135.2e6, "ops": 0.43e8, "bops": 1.68e9},
    "bnext_t": {"size": 5.3, "qops": 13.4e6, "ops": 0.77e8, "bops": 4.82e9},
    "bnext_s": {"size": 11.1, "qops": 21.1e6, "ops": 1.72e8, "bops": 10.84e9},
    "bnext_m": {"size": 20.4, "qops": 24.3e6, "ops": 3.17e8, "bops": 20.09e9},
    "bnext_l": {"size": 47.6, "qops": 39.4e6, "ops": 8.19e8, "bops": 52.15e9},
}

#: the spec that reproduces each † row (see module docstring)
DAGGER_SPECS = {
    "bnext18": PAPER_SPEC + "-4/8",
    "bnext_t": PAPER_SPEC,
    "bnext_s": PAPER_SPEC,
    "bnext_m": PAPER_SPEC,
    "bnext_l": PAPER_SPEC,
}

#: paper Table 7 top-1 (%) per model, rows in TABLE7_SPECS order
PAPER_TABLE7 = {
    "bnext18": (68.37, 68.38, 67.94, 67.91, 67.29),
    "bnext_t": (72.36, 72.36, 72.04, 71.95, 71.72),
    "bnext_s": (76.06, 76.05, 75.75, 75.61, 75.50),
    "bnext_m": (78.27, 78.11, 77.97, 77.93, 77.79),
    "bnext_l": (80.57, 80.47, 80.37, 80.26, 79.52),
}


def dagger_row(name: str, spec: str | None = None, *, input_size: int = 224, num_classes: int = 1000) -> dict:
    """Size/QOPs/OPs of ``name`` quantized with ``spec`` (default :data:`DAGGER_SPECS`), next to the paper's."""
    from .. import models, profile

    spec = DAGGER_SPECS.get(name, PAPER_SPEC) if spec is None else spec
    model = models.create(name, num_classes=num_classes, input_size=input_size)
    # counting does not depend on activation ranges: dynamic avoids the calibration warning
    quantize(model, with_options(spec, act_range="dynamic"), inplace=True)
    p = profile.count(model, input_size)
    row = {"model": name, "spec": spec, "size_mib": p.size_mib, "qops": p.qops, "ops": p.ops, "bops": p.bops,
           "flops": p.flops}
    paper = PAPER_DAGGER.get(name)
    if paper is not None and input_size == 224 and num_classes == 1000:
        row.update({f"paper_{k}": v for k, v in paper.items()})
        row.update({f"{k}_err": row[k if k != "size" else "size_mib"] / v - 1 for k, v in paper.items()})
    return row


def _cell(row: dict, value: float, key: str, unit: float, fmt: str = ".2f") -> str:
    if f"paper_{key}" not in row:
        return f"{value / unit:{fmt}}"
    return f"{value / unit:{fmt}} ({row[f'paper_{key}'] / unit:{fmt}}, {100 * row[f'{key}_err']:+.1f}%)"


def format_dagger(rows: Sequence[dict]) -> str:
    """Markdown table: ours (paper, relative error) for Table 2's † columns."""
    lines = ["| model | spec | size MiB (paper) | QOPs 1e6 (paper) | OPs 1e8 (paper) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['spec']} | {_cell(r, r['size_mib'], 'size', 1)} | "
                     f"{_cell(r, r['qops'], 'qops', 1e6, '.1f')} | {_cell(r, r['ops'], 'ops', 1e8)} |")
    return "\n".join(lines)


def table7(model: nn.Module, train_batches: Iterable | Callable[[], Iterable],
           test_batches: Iterable | Callable[[], Iterable], *, specs: Sequence[str] = TABLE7_SPECS,
           finetune_epochs: int = 0, lr: float = 1e-7, calib_batches: int | None = None,
           device: str = "cpu", progress: Callable[..., Iterable] | None = None) -> list[dict]:
    """Top-1/top-5 of ``model`` (float, not modified) under each spec, as in paper Table 7.

    Each spec: quantize a copy, calibrate activation ranges on ``train_batches`` (at most
    ``calib_batches``), optionally fine-tune ``finetune_epochs`` (section 7.5; not the float row)
    and re-calibrate, evaluate.
    ``delta_top1`` is relative to the float model.  Batches as in :func:`bnext.quant.finetune`.
    ``progress(batches, description, total)`` wraps every pass over the data (e.g.
    :func:`bnext.cli.progress`, a tqdm bar per step).
    """
    def fresh(source: Iterable | Callable[[], Iterable], desc: str, total: int | None = None) -> Iterable:
        batches = source() if callable(source) else source
        return batches if progress is None else progress(batches, desc, total)

    model = model.to(device)
    base = run_evaluate(model, fresh(test_batches, "float model: evaluate"), device=device)
    rows = []
    for spec in specs:
        q = quantize(model, spec)
        calibrate(q, fresh(train_batches, f"{spec}: calibrate", calib_batches), device=device,
                  max_batches=calib_batches)
        if finetune_epochs and not parse_spec(spec).is_float:  # the float row is the untouched baseline
            finetune(q, lambda spec=spec: fresh(train_batches, f"{spec}: fine-tune"), epochs=finetune_epochs, lr=lr,
                     device=device)
            calibrate(q, fresh(train_batches, f"{spec}: re-calibrate", calib_batches), device=device,
                      max_batches=calib_batches)
        stats = run_evaluate(q, fresh(test_batches, f"{spec}: evaluate"), device=device)
        rows.append({"spec": spec, "top1": stats["top1"], "top5": stats.get("top5"), "loss": stats["loss"],
                     "delta_top1": stats["top1"] - base["top1"]})
    return rows


def format_table7(rows: Sequence[dict], model_name: str | None = None) -> str:
    """Markdown table in Table 7's layout (with the paper's column for ``model_name`` when known)."""
    paper = PAPER_TABLE7.get(model_name or "")
    head = "| I-S-E-O (W/A) | top-1 (%) | delta vs float | top-5 (%) |"
    sep = "|---|---|---|---|"
    if paper:
        head += " paper ImageNet top-1 |"
        sep += "---|"
    lines = [head, sep]
    for r in rows:
        top5 = "-" if r.get("top5") is None else f"{r['top5']:.2f}"
        line = f"| {r['spec']} | {r['top1']:.2f} | {r['delta_top1']:+.2f} | {top5} |"
        if paper and r["spec"] in TABLE7_SPECS:
            line += f" {paper[TABLE7_SPECS.index(r['spec'])]:.2f} |"
        elif paper:
            line += " - |"
        lines.append(line)
    return "\n".join(lines)
