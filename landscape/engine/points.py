"""Evaluating grid points: the fast pass, its audit, the fallbacks to the reference path, several points
per forward (``vmap``). :class:`PointEvaluation` is the part of :class:`landscape.engine.SurfaceEngine` that
runs after set-up (:mod:`landscape.engine.evaluate`); the checks are those of :mod:`landscape.engine.audit`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..threads import run_ordered
from .audit import AUDIT_CHUNK, AUDIT_SHARE, MarginRecorder, audit_indices, audit_share, logit_margins, sign_modules


class PointEvaluation:
    """Per-point evaluation of an open engine (attributes are set by the engine's set-up)."""

    device: torch.device
    precision: str
    batch_size: int
    points_per_forward: int
    sign_sensitive: bool
    forward_factory: Any
    settings: dict[str, Any]
    counters: dict[str, Any]
    work: nn.Module
    _data: dict[str, tuple[Tensor, Tensor]]
    _forward: Callable[[Tensor], Tensor]
    _ref_batch: int
    _reference_only: bool
    _audit_on: bool
    _forward_name: str
    _workers: int
    _opened: bool

    def set_point(self, x: float, y: float = 0.0) -> None:  # provided by the engine
        raise NotImplementedError

    def _note(self, message: str, key: str | None = None) -> None:  # provided by the engine
        raise NotImplementedError

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _measure(self, forward: Callable[[Tensor], Tensor], keep: bool = False
                 ) -> tuple[dict[str, float], dict[str, Tensor]]:
        with self._autocast():
            return self._measure_splits(forward, self.batch_size, keep=keep,
                                        margins=self._margin_modules(forward) if keep else None)

    def _margin_modules(self, forward: Callable[[Tensor], Tensor]) -> list[nn.Module]:
        """The layers of the fast forward that binarize (a provider says which: ``margin_modules()``)."""
        if not self.sign_sensitive:
            return []
        offered = getattr(self.forward_factory, "margin_modules", None)
        if callable(offered):
            return list(offered())
        return sign_modules(forward) if isinstance(forward, nn.Module) else []

    def _measure_splits(self, forward: Callable[[Tensor], Tensor], batch: int, *, keep: bool = False,
                        nchw: bool = False, margins: Sequence[nn.Module] | None = None
                        ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Loss and accuracy per split in batches of ``batch``; with ``keep`` also every image's logits
        (``<split>``) and, for the binarizing ``margins`` modules, its binary margin (``<split>/margin``)."""
        out, kept = {}, {}
        for split, (xs, ys) in self._data.items():
            loss = torch.zeros((), dtype=torch.float64, device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            parts = []
            # the loss and metrics asked for (landscape.objectives), else cross-entropy and top-1
            acc = self.objectives.accumulator(split) if self.objectives is not None else None
            starts = range(0, xs.shape[0], batch)
            workers = self._workers if not nchw else 1
            with MarginRecorder(margins or [], xs.shape[0]) as rec:
                if workers > 1:  # every batch on a single-threaded worker; combined below in batch order
                    batches = run_ordered(self._forward_batch, [(forward, xs, s, batch, rec) for s in starts],
                                          workers)
                for k, s in enumerate(starts):
                    rec.start = s
                    if workers > 1:
                        logits = batches[k]
                    else:
                        xb = xs[s : s + batch]
                        logits = _as_float(forward(xb.contiguous() if nchw else xb))
                    yb = ys[s : s + batch]
                    if acc is not None:
                        acc.update(logits, yb)
                    else:
                        loss += F.cross_entropy(logits, yb, reduction="sum").double()
                        correct += (logits.argmax(dim=1) == yb).sum()
                    if keep:
                        parts.append(logits.float())
            n = xs.shape[0]
            if acc is not None:
                out.update(acc.result(n))
            else:
                out[f"{split}_loss"] = float(loss) / n
                out[f"{split}_acc"] = 100.0 * float(correct) / n
            if keep:
                kept[split] = torch.cat(parts)
                if margins:
                    kept[f"{split}/margin"] = rec.margins
        return out, kept

    def _forward_batch(self, job: tuple[Callable[[Tensor], Tensor], Tensor, int, int, MarginRecorder]) -> Tensor:
        """The logits of rows ``start : start + batch`` on a worker thread (inference mode, autocast and the
        margin recorder's row offset are per thread: set here)."""
        forward, xs, start, batch, rec = job
        rec.start = start
        with torch.inference_mode(), self._autocast():
            return _as_float(forward(xs[start : start + batch]))

    def _reference_values(self) -> dict[str, float]:
        """The point on the reference path: the model's own forward, fp32, NCHW, the reference batch size."""
        return self._measure_splits(self.work, self._ref_batch, nchw=True)[0]

    def _audit_forward(self) -> Callable[[Tensor], Tensor]:
        """What the audited images are checked against: a provider's forward that is bit-identical to the
        model's own (``reference_forward()``, e.g. the packed engine without its fused float parts), else
        the model's own forward."""
        offered = getattr(self.forward_factory, "reference_forward", None)
        forward = offered() if callable(offered) else None
        return forward if forward is not None else self.work

    def _audit_logits(self, reference: Callable[[Tensor], Tensor], xs: Tensor) -> Tensor:
        """The reference logits of the audited images ``xs``: in fixed chunks of :data:`AUDIT_CHUNK` (the same
        batches whatever the thread count), side by side on the batch workers when there are (fp32, no
        autocast: the reference path)."""
        def chunk(start: int) -> Tensor:
            with torch.inference_mode():
                return _as_float(reference(xs[start : start + AUDIT_CHUNK].contiguous()))

        starts = list(range(0, xs.shape[0], AUDIT_CHUNK))
        return torch.cat(run_ordered(chunk, starts, min(self._workers, len(starts))))

    def _audit(self, vals: Mapping[str, float], logits: Mapping[str, Tensor]) -> float:
        """The share of the tolerance budget that the audited images of every split use up at the current
        point (:func:`landscape.engine.audit.audit_share`; the largest over the splits)."""
        worst = 0.0
        reference = self._audit_forward()
        for split, (xs, ys) in self._data.items():
            lg = logits[split]
            idx = audit_indices(xs.shape[0], logits.get(f"{split}/margin"), logit_margins(lg)).to(self.device)
            ref = self._audit_logits(reference, xs[idx])
            worst = max(worst, audit_share(lg[idx], ref, ys[idx], xs.shape[0], vals[f"{split}_loss"]))
        return worst

    def _checked(self, vals: dict[str, float], logits: Mapping[str, Tensor], where: tuple[float, float]
                 ) -> dict[str, float]:
        """Audit the fast values of the current point; recompute them on the reference path if they fail."""
        share = self._audit(vals, logits)
        c = self.counters
        c["audited_points"] += 1
        c["max_audit_share"] = max(c["max_audit_share"], share)
        if share <= AUDIT_SHARE or self.precision != "fp32":  # bf16: measured and stored, never recomputed
            return vals
        c["audit_failed_points"] += 1
        self._note(f"the fast path disagreed with the reference forward on audited images at (x, y) = "
                   f"({where[0]:g}, {where[1]:g}) (they use {share:.3g} of the tolerance, more than {AUDIT_SHARE}): "
                   "such points are recomputed on the reference path (engine counter 'audit_failed_points')",
                   key="audit")
        return self._reference_values()

    def evaluate(self, x: float, y: float = 0.0) -> dict[str, float]:
        """``{'<split>_loss': mean cross-entropy, '<split>_acc': top-1 percent}`` at ``(x, y)``."""
        self.set_point(x, y)
        with torch.inference_mode():
            return self._evaluate_current((x, y))

    def _evaluate_current(self, where: tuple[float, float]) -> dict[str, float]:
        self.counters["points"] += 1
        if self._reference_only:
            return self._reference_values()
        try:
            forward = self.forward_factory(self.work) if self.forward_factory is not None else self._forward
            vals, logits = self._measure(forward, keep=self._audit_on)
        except Exception as exc:  # noqa: BLE001 - any fast-path failure: this point on the reference path
            if self._forward_name == "custom" or (self.forward_factory is None and self._forward is self.work
                                                  and self.precision == "fp32"):
                raise  # the caller's own forward, or already the reference path: nothing to fall back to
            self.counters["fallback_points"] += 1
            self._note(f"the fast path failed at a grid point ({_one_line(exc)}): such points are computed with "
                       "the model's own forward (engine counter 'fallback_points')", key=f"fail:{type(exc).__name__}")
            return self._reference_values()
        return self._checked(vals, logits, where) if self._audit_on else vals

    def _stacked(self, points: Sequence[tuple[float, float]]) -> dict[str, Tensor]:
        """Perturbed parameters of ``len(points)`` grid points stacked along a new first dimension."""
        k = len(points)
        xs_ = torch.tensor([p[0] for p in points], dtype=self._theta0.dtype, device=self.device)
        ys_ = torch.tensor([p[1] for p in points], dtype=self._theta0.dtype, device=self.device)
        stacked = {}
        for e in self._entries:
            sl = slice(e.offset, e.offset + e.numel)
            flat = self._theta0[sl][None] + xs_[:, None] * self._dx[sl][None]
            if self._dy is not None:
                flat = flat + ys_[:, None] * self._dy[sl][None]
            stacked[e.name] = flat.reshape(k, *e.target.shape).to(e.target.dtype)
        return stacked

    def _vmapped(self) -> Callable[[dict[str, Tensor], Tensor], Tensor]:
        from torch.func import functional_call, vmap

        work = self.work

        def one(params: dict[str, Tensor], xb: Tensor) -> Tensor:
            return functional_call(work, params, (xb,))

        return vmap(one, in_dims=(0, None))

    def evaluate_many(self, points: Sequence[tuple[float, float]]) -> list[dict[str, float]]:
        """Evaluate several points; with ``points_per_forward > 1`` they share forwards via ``vmap``."""
        if self.points_per_forward == 1 or len(points) == 1:
            return [self.evaluate(*p) for p in points]
        if not self._opened:
            raise RuntimeError("SurfaceEngine is not open; use it as a context manager")
        try:
            results, kept = self._evaluate_vmapped(points)
        except Exception as exc:  # noqa: BLE001 - e.g. an op vmap does not support at this point
            self._note(f"several points per forward (vmap) failed ({_one_line(exc)}): one point per forward")
            self.points_per_forward = 1
            self.settings["points_per_forward"] = 1
            return [self.evaluate(*p) for p in points]
        if self._audit_on:
            for i, p in enumerate(points):
                self.set_point(*p)
                with torch.inference_mode():
                    self.counters["points"] += 1
                    results[i] = self._checked(results[i], {s: v[i] for s, v in kept.items()}, p)
        else:
            self.counters["points"] += len(points)
        return results

    def _evaluate_vmapped(self, points: Sequence[tuple[float, float]]
                          ) -> tuple[list[dict[str, float]], dict[str, Tensor]]:
        k = len(points)
        kept: dict[str, Tensor] = {}
        with torch.inference_mode():
            stacked = self._stacked(points)
            batched = self._vmapped()
            results: list[dict[str, float]] = [{} for _ in points]
            with self._autocast():
                for split, (xs, ys) in self._data.items():
                    loss = torch.zeros(k, dtype=torch.float64, device=self.device)
                    correct = torch.zeros(k, dtype=torch.int64, device=self.device)
                    parts = []
                    accs = [self.objectives.accumulator(split) for _ in points] if self.objectives is not None else None
                    for s in range(0, xs.shape[0], self.batch_size):
                        logits = _as_float(batched(stacked, xs[s : s + self.batch_size]))  # (k, B, C)
                        yb = ys[s : s + self.batch_size]
                        if accs is not None:
                            for i, a in enumerate(accs):
                                a.update(logits[i], yb)
                        else:
                            ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(k), reduction="none")
                            loss += ce.view(k, -1).sum(dim=1).double()
                            correct += (logits.argmax(dim=2) == yb[None]).sum(dim=1)
                        if self._audit_on:
                            parts.append(logits.float())
                    n = xs.shape[0]
                    for i in range(k):
                        if accs is not None:
                            results[i].update(accs[i].result(n))
                        else:
                            results[i][f"{split}_loss"] = float(loss[i]) / n
                            results[i][f"{split}_acc"] = 100.0 * float(correct[i]) / n
                    if parts:
                        kept[split] = torch.cat(parts, dim=1)
        return results, kept


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (reasons are said in one line)."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def _as_float(logits: Tensor) -> Tensor:
    """Half-precision logits are promoted for the loss; float32/float64 are kept."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()

