"""Timing helpers shared by ``python -m bnext.packed bench`` and ``benchmarks/packed_speed.py``.

Every figure is the best of several repeats (the machine may be shared); the float
reference runs under ``torch.inference_mode`` with the same thread count.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import BinaryConv2d, binary_layers, set_tau
from . import kernels
from .layers import PackedBinaryConv2d
from .model import pack


def cpu_model() -> str:
    """CPU model name, family/model and the SIMD features the kernel can use (from /proc/cpuinfo)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model", "flags") and key not in info:
                    info[key] = value.strip()
                if len(info) == 4:
                    break
    except OSError:
        return platform.processor() or "unknown"
    flags = set(info.get("flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vpopcntdq", "popcnt") if f in flags]
    name, family, model = info.get("model name", "unknown"), info.get("cpu family", "?"), info.get("model", "?")
    return (f"{name} (family {family}, model {model}; {', '.join(simd) or 'no AVX2/AVX-512'}; "
            f"{os.cpu_count()} logical CPUs)")


def best_time(fn: Callable[[], Any], repeats: int = 10, max_seconds: float | None = None,
              warmup: bool = True) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeats`` calls (after one warm-up call if ``warmup``).

    ``max_seconds`` stops early (after at least one timed call) once that much time is spent.
    """
    if warmup:
        fn()  # compilation, allocator, thread pools
    best = float("inf")
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    return best


def interleaved_times(fns: dict[str, Callable[[], Any]], repeats: int = 10, max_seconds: float | None = None,
                      warmup: bool = True) -> dict[str, list[float]]:
    """Wall times (seconds) of each ``fns[name]()`` called in turn A, B, C, A, B, C ... ``repeats`` rounds.

    Interleaving makes load changes on a shared machine hit every contender alike. ``max_seconds``
    stops after the round in which that much time was spent (at least one round always runs).
    """
    if warmup:
        for fn in fns.values():
            fn()  # compilation, allocator, thread pools
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    return times


def summary(times: list[float]) -> tuple[float, float]:
    """``(min, median)`` of a list of times."""
    return min(times), float(np.median(times))


class PrebinarizedConv2d(nn.Module):
    """Float reference of a binary conv with its +-1 (times alpha) weights computed once (not per forward)."""

    def __init__(self, layer: BinaryConv2d) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("wb", layer.binary_weight().detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(self.layer.binarize_input(x), self.wb, None, self.layer.stride, self.layer.padding)


def prebinarized(model: nn.Module) -> nn.Module:
    """Copy of ``model`` whose binary convs reuse precomputed float +-1 weights: a fairer float baseline.

    The simulated model recomputes ``sign(W)`` at every forward (it is a training graph);
    this reference removes that cost and keeps everything else (sign of the activations,
    fp32 ``conv2d``, the real-valued modules).
    """
    clone = copy.deepcopy(model).eval()
    for name, layer in list(binary_layers(clone)):
        parent_name, _, leaf = name.rpartition(".")
        setattr(clone.get_submodule(parent_name) if parent_name else clone, leaf, PrebinarizedConv2d(layer))
    return clone


def load_average() -> str:
    """The 1/5/15-minute load averages (the machine may be shared)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def set_threads(threads: int) -> None:
    """Same thread count for torch and numba."""
    torch.set_num_threads(threads)
    kernels.set_threads(threads)


@torch.inference_mode()
def layer_benchmark(cin: int, cout: int, size: int, stride: int = 1, kernel_size: int = 3, batch: int = 1,
                    repeats: int = 20, max_seconds: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Binary conv layer: packed kernel vs ``F.conv2d`` fp32 on the same shape.

    ``packed_ms`` times the XNOR-popcount kernel on an already packed input (what a layer
    costs when it receives packed bits); ``packed_e2e_ms`` adds binarizing and packing the
    NCHW float input and writing NCHW float output (what one layer costs inside a
    float model).  ``torch_ms`` is ``F.conv2d`` on float tensors of the same shape.
    """
    g = torch.Generator().manual_seed(seed)
    layer = BinaryConv2d(cin, cout, kernel_size, stride).eval()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
    x = torch.randn(batch, cin, size, size, generator=g)
    w = layer.weight.detach().clone()
    packed = PackedBinaryConv2d.from_layer(layer)
    xn = x.numpy()
    xp = packed.pack_input(xn)
    out = np.empty(packed.output_shape(batch, size, size), np.float32)
    times = interleaved_times({
        "torch": lambda: F.conv2d(x, w, None, stride, layer.padding),
        "kernel": lambda: packed.conv_packed(xp, size, size, out),
        "layer": lambda: packed(x),
        "pack": lambda: packed.pack_input(xn),
    }, repeats, max_seconds)
    (t_torch, m_torch), (t_kernel, m_kernel), (t_e2e, m_e2e), (t_pack, _) = (summary(times[k]) for k in times)
    return {
        "shape": f"{cin}->{cout} k{kernel_size} s{stride} @{size}x{size}",
        "batch": batch,
        "torch_ms": t_torch * 1e3,
        "packed_ms": t_kernel * 1e3,
        "pack_input_ms": t_pack * 1e3,
        "packed_e2e_ms": t_e2e * 1e3,
        "ratio": t_torch / t_kernel,
        "ratio_e2e": t_torch / t_e2e,
        "median_torch_ms": m_torch * 1e3,
        "median_packed_ms": m_kernel * 1e3,
        "median_packed_e2e_ms": m_e2e * 1e3,
        "median_ratio": m_torch / m_kernel,
        "median_ratio_e2e": m_torch / m_e2e,
        "repeats": len(times["torch"]),
    }


@torch.inference_mode()
def model_benchmark(name: str, input_size: int = 224, batch: int = 1, width: float = 1.0,
                    num_classes: int | None = None, repeats: int = 5, threads: int = 2,
                    max_seconds: float | None = None) -> dict[str, Any]:
    """End to end: packed model vs the simulated model (fp32, eval, ``inference_mode``) and vs
    :func:`prebinarized` (the same float model without the per-forward weight binarization); also the
    packed model with fused float passes (``pack(..., fuse_float=True)``: BNext modules as numba passes,
    within the landscape engine's tolerance rather than bit-identical), as ``*_fused``."""
    from ..models import create

    num_classes = num_classes or (1000 if input_size > 64 else 10)
    model = create(name, num_classes=num_classes, input_size=input_size, width=width).eval()
    set_tau(model, 0.0)
    packed = pack(model, threads=threads)
    fused = pack(model, threads=threads, fuse_float=True)
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    reference = prebinarized(model)
    t_pack = best_time(lambda: pack(model, threads=threads), 1)
    times = interleaved_times({"simulated": lambda: model(x), "prebinarized": lambda: reference(x),
                               "packed": lambda: packed(x), "fused": lambda: fused(x)}, repeats, max_seconds)
    (t_sim, m_sim), (t_pre, m_pre), (t_packed, m_packed), (t_fused, m_fused) = (summary(times[k]) for k in times)
    ref = model(x)

    def rel_diff(out: Tensor) -> float:
        return float((ref - out).abs().max() / ref.abs().max().clamp_min(1e-30))

    rel, rel_fused = rel_diff(packed(x)), rel_diff(fused(x))
    binary_float = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, BinaryConv2d))
    real = sum(p.numel() * p.element_size() for p in model.parameters()) - binary_float
    mem = packed.weight_bytes()
    return {
        "model": name,
        "input_size": input_size,
        "batch": batch,
        "width": width,
        "simulated_ms": t_sim * 1e3,
        "prebinarized_ms": t_pre * 1e3,
        "packed_ms": t_packed * 1e3,
        "ratio": t_sim / t_packed,
        "ratio_prebinarized": t_pre / t_packed,
        "median_simulated_ms": m_sim * 1e3,
        "median_packed_ms": m_packed * 1e3,
        "median_ratio": m_sim / m_packed,
        "packed_fused_ms": t_fused * 1e3,
        "ratio_fused": t_sim / t_fused,
        "median_ratio_fused": m_sim / m_fused,
        "max_rel_diff_fused": rel_fused,
        "repeats": len(times["packed"]),
        "pack_ms": t_pack * 1e3,
        "max_rel_diff": rel,
        "weights_float_mib": (binary_float + real) / 2**20,
        "weights_packed_mib": mem["total"] / 2**20,
        "binary_float_mib": binary_float / 2**20,
        "binary_packed_mib": mem["binary"] / 2**20,
        "binary_held_mib": mem["binary_held"] / 2**20,
    }


#: paper Table 2 model sizes (MiB by the counting rule), 224x224 input, 1000 classes
PAPER_SIZE_MIB = {"bnext18": 5.43, "bnext_t": 13.32, "bnext_s": 26.75, "bnext_m": 46.57, "bnext_l": 106.32}


def size_row(name: str, workdir: str, input_size: int = 224, num_classes: int = 1000) -> dict[str, Any]:
    """Checkpoint file (``bnext.models.save``) vs packed file (``bnext.packed.save``) of one model, in MiB."""
    from pathlib import Path

    from ..models import create
    from ..models import save as save_checkpoint
    from ..profile import count
    from .fileformat import save

    model = create(name, num_classes=num_classes, input_size=input_size).eval()
    set_tau(model, 0.0)
    ckpt = save_checkpoint(model, Path(workdir) / f"{name}.pt")
    packed_path = save(pack(model), Path(workdir) / f"{name}.bnx")
    row = {
        "model": name,
        "checkpoint_mib": ckpt.stat().st_size / 2**20,
        "packed_mib": packed_path.stat().st_size / 2**20,
        "counted_mib": count(model, input_size).size_mib,
        "paper_mib": PAPER_SIZE_MIB.get(name),
    }
    ckpt.unlink()
    packed_path.unlink()
    return row
