"""The binary-weight landscape: loss and accuracy against the fraction of flipped weight signs.

A binary network computes with ``sign(W)``; its latent-weight landscape is a staircase that changes
only where a sign flips. This module measures the landscape where the network lives: starting from
the trained signs, flip a growing fraction of them (in one layer, or in the whole network) and
evaluate the packed 1-bit model after each step. Flips are applied in place to the packed weight
words (XOR of the sign bit, tap sums updated, border corrections recomputed): no repacking per point.

Orders: ``random`` (a seeded permutation; several seeds give the spread) and ``magnitude``
(smallest latent ``|w|`` first, the signs a trained network is least sure of; ties broken by the
seed). At fraction 1 every binary weight in scope is negated. BatchNorm statistics stay those of the
trained model (the deployed network's). Each (scope, order, seed) is a 1D surface file
(``xcoordinates`` = fraction flipped; ``directions/x/<layer>.weight`` = the fraction at which each
weight flips, ``inf`` outside the scope), resumable, with ``metrics/flips``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..nn import binary_layers
from . import kernels
from .bits import n_words
from .layers import PackedBinaryConv2d
from .model import PackedModel

__all__ = ["DEFAULT_FRACTIONS", "ORDERS", "BitFlipper", "flip_metrics", "flip_order", "flip_sweep",
           "summarize_seeds"]

ORDERS = ("random", "magnitude")
#: default fractions of flipped signs: dense where a trained network degrades, then to all-negated
DEFAULT_FRACTIONS = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class BitFlipper:
    """Toggle weight signs of a :class:`PackedModel`'s binary layers in place, on the packed words.

    A weight is addressed by its layer name and its flat index in the ``(O, I, k, k)`` weight (C order).
    :meth:`restore` puts back the signs the flipper found.
    """

    def __init__(self, packed: PackedModel) -> None:
        self.packed = packed
        self.layers: dict[str, PackedBinaryConv2d] = dict(packed.packed_layers())
        if not self.layers:
            raise ValueError("the packed model has no binary layer to flip")
        self._saved = {n: (m.wt.copy(), m.tapsum.copy()) for n, m in self.layers.items()}

    def sizes(self) -> dict[str, int]:
        """Binary weights per layer."""
        return {n: m.out_channels * m.in_channels * m.kernel_size**2 for n, m in self.layers.items()}

    def flip(self, name: str, flat: np.ndarray) -> None:
        """Toggle the signs of the weights ``flat`` (distinct flat indices) of layer ``name``."""
        m = self.layers[name]
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        if not flat.size:
            return
        k, c_in = m.kernel_size, m.in_channels
        o, c, kh, kw = np.unravel_index(flat, (m.out_channels, c_in, k, k))
        tap = kh * k + kw
        words = n_words(c_in)
        col = tap * words + c // 64
        index = ((o // kernels.OT) * (k * k * words) + col) * kernels.OT + o % kernels.OT
        bit = (c % 64).astype(np.uint64)
        was_negative = ((m.wt[index] >> bit) & np.uint64(1)).astype(bool)
        np.bitwise_xor.at(m.wt, index, np.left_shift(np.uint64(1), bit))
        np.add.at(m.tapsum, (tap, o), np.where(was_negative, 2, -2).astype(np.int32))  # tapsum = sum of signs
        m._corrections.clear()  # border corrections and plans are built from the tap sums
        m._plans.clear()

    def restore(self) -> None:
        """Back to the signs at construction."""
        for n, m in self.layers.items():
            wt, tapsum = self._saved[n]
            m.wt[...] = wt
            m.tapsum[...] = tapsum
            m._corrections.clear()
            m._plans.clear()


def latent_magnitudes(model: nn.Module) -> dict[str, np.ndarray]:
    """``|W|`` of every binary layer's latent weights, flat in C order."""
    return {n: layer.weight.detach().abs().float().cpu().numpy().reshape(-1) for n, layer in binary_layers(model)}


def flip_order(sizes: Mapping[str, int], scope: str, order: str, seed: int,
               magnitudes: Mapping[str, np.ndarray] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The flip order over the weights in ``scope`` (``network`` or a layer name).

    Returns ``(names, layer_ids, flat)``: the ``j``-th flip toggles weight ``flat[j]`` of layer
    ``names[layer_ids[j]]``. ``magnitude`` needs ``magnitudes`` (latent ``|w|``; smallest first,
    ties in seeded random order); ``random`` is a seeded permutation.
    """
    if order not in ORDERS:
        raise ValueError(f"flip order must be one of {ORDERS}, got {order!r}")
    names = list(sizes) if scope == "network" else [scope]
    if scope != "network" and scope not in sizes:
        raise ValueError(f"scope {scope!r} is not a binary layer; expected 'network' or one of {list(sizes)}")
    ids = np.concatenate([np.full(sizes[n], i, np.int32) for i, n in enumerate(names)])
    flat = np.concatenate([np.arange(sizes[n], dtype=np.int64) for n in names])
    rng = np.random.default_rng(seed)
    tie = rng.permutation(ids.size)
    if order == "random":
        perm = tie
    else:
        if magnitudes is None:
            raise ValueError("the magnitude order needs the latent weights (pass magnitudes)")
        mag = np.concatenate([np.asarray(magnitudes[n], np.float64).reshape(-1) for n in names])
        perm = np.lexsort((tie, mag))
    return names, ids[perm], flat[perm]


def _steps(n_total: int, fractions: np.ndarray) -> np.ndarray:
    """Flips done at each fraction: ``round(f * n)``."""
    return np.rint(fractions * n_total).astype(np.int64)


def _threshold_directions(sizes: Mapping[str, int], names: list[str], ids: np.ndarray, flat: np.ndarray
                          ) -> dict[str, np.ndarray]:
    """Per layer ``<layer>.weight``: the fraction of the order at which each weight flips (inf outside)."""
    out = {f"{n}.weight": np.full(s, np.inf, np.float32) for n, s in sizes.items()}
    rank = (np.arange(ids.size, dtype=np.float64) + 1) / ids.size
    for i, n in enumerate(names):
        sel = ids == i
        out[f"{n}.weight"][flat[sel]] = rank[sel]
    return out


def flip_metrics(fractions: np.ndarray, acc: np.ndarray, loss: np.ndarray, chance: float) -> dict[str, float]:
    """``half_accuracy_fraction``: the (linearly interpolated) fraction where accuracy first falls to
    halfway between its unflipped value and chance (NaN if it never does); ``accuracy_area``: the
    mean accuracy over the fractions (trapezoid); ``loss_at_0``/``loss_at_1``."""
    f, a = np.asarray(fractions, float), np.asarray(acc, float)
    level = 0.5 * (a[0] + chance)
    half = math.nan
    below = np.nonzero(a <= level)[0]
    if below.size and below[0] > 0:
        j = int(below[0])
        half = float(f[j - 1] + (f[j] - f[j - 1]) * (a[j - 1] - level) / max(a[j - 1] - a[j], 1e-12))
    elif below.size:
        half = 0.0
    area = float(np.sum(np.diff(f) * 0.5 * (a[1:] + a[:-1])) / max(f[-1] - f[0], 1e-12))
    return {"half_accuracy_fraction": half, "accuracy_area": area, "loss_at_0": float(loss[0]),
            "loss_at_1": float(loss[-1]), "acc_at_0": float(a[0]), "acc_at_1": float(a[-1]), "chance": chance}


def summarize_seeds(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, standard deviation, min, max and a Student-t interval over seeds (NaNs dropped)."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    out: dict[str, Any] = {"n": int(v.size), "mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan,
                           "ci": [math.nan, math.nan]}
    if v.size:
        out.update(mean=float(v.mean()), min=float(v.min()), max=float(v.max()))
    if v.size > 1:
        from scipy import stats

        sd = float(v.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1)) * sd / math.sqrt(v.size)
        out.update(std=sd, ci=[out["mean"] - half, out["mean"] + half])
    return out


@dataclass
class FlipRun:
    """One flip curve: its file and its metrics."""

    scope: str
    order: str
    seed: int
    path: Path
    metrics: dict[str, Any]


def _runs(scopes: Sequence[str], orders: Sequence[str], seeds: Sequence[int]) -> Iterator[tuple[str, str, int]]:
    for scope in scopes:
        for order in orders:
            for seed in (seeds if order == "random" else seeds[:1]):  # magnitude: one order (ties aside)
                yield scope, order, seed


def flip_sweep(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    packed: PackedModel,
    data: Mapping[str, tuple[Tensor, Tensor]],
    *,
    scopes: Sequence[str] = ("network",),
    orders: Sequence[str] = ORDERS,
    seeds: Sequence[int] = (0, 1, 2),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    metadata: Mapping[str, Any] | None = None,
    batch_size: int = 256,
    mode: str = "resume",
    progress: bool = True,
) -> list[FlipRun]:
    """Flip curves for every (scope, order, seed) into ``<out_dir>/flips_<scope>_<order>_s<seed>.h5``.

    ``model`` is the latent-weight model (for the magnitude order), ``packed`` its packed form
    (``bnext.packed.pack(model)``), evaluated on ``data`` (``{split: (inputs, targets)}``).
    ``scopes``: ``network`` and/or binary layer names (``all-layers`` expands to every layer).
    The packed model's signs are restored afterwards.
    """
    from tqdm.auto import tqdm

    from landscape.connect import measure
    from landscape.store import SurfaceWriter, package_version, read_surface, write_metrics

    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or fr.size < 2 or fr[0] != 0.0 or fr[-1] != 1.0 or np.any(np.diff(fr) <= 0):
        raise ValueError(f"fractions must increase from 0 to 1 (at least 2 values), got {list(fractions)}")
    flipper = BitFlipper(packed)
    sizes = flipper.sizes()
    scopes = [s for scope in scopes for s in (list(sizes) if scope == "all-layers" else [scope])]
    for s in scopes:
        if s != "network" and s not in sizes:
            raise ValueError(f"scope {s!r} is not a binary layer; expected network, all-layers or one of "
                             f"{list(sizes)}")
    mags = latent_magnitudes(model)
    if set(mags) != set(sizes):
        raise ValueError("the model and the packed model differ in binary layers")
    chance = 100.0 / int(packed(next(iter(data.values()))[0][:1]).shape[1])
    out_dir = Path(out_dir)
    jobs = list(_runs(scopes, orders, seeds))
    results: list[FlipRun] = []
    bar = tqdm(total=len(jobs) * fr.size, desc="sign flips", unit="pt", disable=not progress, leave=False)
    try:
        for scope, order, seed in jobs:
            names, ids, flat = flip_order(sizes, scope, order, seed, mags)
            settings = {**dict(metadata or {}), "kind": "flips", "scope": scope, "order": order, "seed": seed,
                        "weights_in_scope": int(ids.size), "evaluated_by": "bnext.packed",
                        "package_version": package_version(), "bn": "trained statistics (not recalibrated)"}
            directions = _threshold_directions(sizes, names, ids, flat)
            info = {"kind": "flips", "scope": scope, "order": order,
                    "parameterization": "x is the fraction of binary weights in scope whose sign is flipped; "
                                        "directions/x/<layer>.weight: the fraction at which each weight flips"}
            path = out_dir / f"flips_{scope}_{order}_s{seed}.h5"
            steps = _steps(ids.size, fr)
            with SurfaceWriter.open(path, settings=settings, xcoordinates=fr, ycoordinates=None,
                                    directions={"x": directions}, direction_info=info, mode=mode) as writer:
                path = writer.path
                done = writer.done()
                flipped = 0
                try:
                    for i, target in enumerate(steps):
                        for li, name in enumerate(names):  # the chunk of the order between two fractions
                            sel = ids[flipped:target] == li
                            flipper.flip(name, flat[flipped:target][sel])
                        flipped = int(target)
                        if not done[i]:
                            values, _ = measure(packed, data, batch_size)
                            writer.write([((i,), values)])
                        bar.update(1)
                finally:
                    flipper.restore()
            surface = read_surface(path)
            split = "test" if "test" in data else next(iter(data))
            metrics = flip_metrics(fr, surface.values[f"{split}_acc"], surface.values[f"{split}_loss"], chance)
            metrics["split"] = split
            write_metrics(path, "flips", metrics)
            results.append(FlipRun(scope, order, seed, path, metrics))
    finally:
        bar.close()
    return results


def sweep_summary(runs: Sequence[FlipRun]) -> dict[str, Any]:
    """Per (scope, order): the seeds' curves (fractions, loss, acc per split) and the spread of the metrics."""
    from landscape.store import read_surface

    out: dict[str, Any] = {}
    for run in runs:
        entry = out.setdefault(run.scope, {}).setdefault(run.order, {"seeds": [], "files": [], "curves": {}})
        s = read_surface(run.path)
        entry["seeds"].append(run.seed)
        entry["files"].append(str(run.path))
        entry["fractions"] = s.xcoordinates.tolist()
        for key in s.available():
            entry["curves"].setdefault(key, []).append(s.values[key].tolist())
        entry.setdefault("per_seed", []).append(run.metrics)
    for scope in out.values():
        for entry in scope.values():
            for key in ("half_accuracy_fraction", "accuracy_area", "acc_at_1", "loss_at_1"):
                entry[key] = summarize_seeds([m[key] for m in entry["per_seed"]])
    return out
