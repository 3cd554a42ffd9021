"""The evaluation engine: a model evaluated at grid points ``theta + x*dx + y*dy``.

See :mod:`landscape.surface` for what is computed and how the engine makes the forward cheaper.
"""


from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .directions import Directions

ForwardFactory = Callable[[nn.Module], Callable[[Tensor], Tensor]]
EvalData = Mapping[str, tuple[Tensor, Tensor]]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ----------------------------------------------------------------------------- BN folding
def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(bn) is nn.BatchNorm2d
        and bn.track_running_stats
        and bn.running_mean is not None
        and conv.out_channels == bn.num_features
    )


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Names of ``(Conv2d, BatchNorm2d)`` pairs where the BN directly and only consumes the conv.

    Uses a ``torch.fx`` trace when the model traces (checks that each module is called once and
    that the conv output has no other user); otherwise adjacent children of plain ``nn.Sequential``
    containers. Subclasses (e.g. binary convolutions) are never folded.
    """
    modules = dict(model.named_modules())
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - untraceable models fall back to Sequential chains
        graph = None
    pairs: list[tuple[str, str]] = []
    if graph is not None:
        calls: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                calls[node.target] = calls.get(node.target, 0) + 1
        for node in graph.nodes:
            if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
                continue
            src = node.args[0]
            if not isinstance(src, torch.fx.Node) or src.op != "call_module":
                continue
            conv, bn = modules.get(src.target), modules.get(node.target)
            if conv is None or bn is None or not _foldable(conv, bn):
                continue
            if len(src.users) == 1 and calls[src.target] == 1 and calls[node.target] == 1:
                pairs.append((src.target, node.target))
        return pairs
    for name, mod in modules.items():
        if type(mod).forward is not nn.Sequential.forward or not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
            if _foldable(m1, m2):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + n1, prefix + n2))
    return pairs


@dataclass
class _FoldedPair:
    conv: nn.Conv2d  # the original conv (weights move with the grid point)
    bn: nn.BatchNorm2d  # the original BN
    weight: Tensor  # folded conv weight in the copy
    bias: Tensor  # folded conv bias in the copy

    def refresh(self) -> None:
        bn = self.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        torch.mul(self.conv.weight, scale.reshape(-1, 1, 1, 1), out=self.weight)
        shift = -bn.running_mean * scale
        if self.conv.bias is not None:
            shift = shift + self.conv.bias * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        self.bias.copy_(shift)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, list[_FoldedPair]]:
    """A copy of ``model`` with each foldable BN merged into its conv (eval-mode arithmetic).

    The copy shares every other parameter and buffer with ``model`` (same tensor objects), so
    in-place changes to ``model`` show through; call ``pair.refresh()`` after changing the conv or
    BN tensors. Returns ``(copy, pairs)``; with no foldable pair the copy is ``model`` itself.
    """
    names = find_conv_bn_pairs(model)
    if not names:
        return model, []
    memo = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    fused = copy.deepcopy(model, memo)
    pairs = []
    for conv_name, bn_name in names:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fconv = fused.get_submodule(conv_name)
        w = nn.Parameter(torch.empty_like(conv.weight), requires_grad=False)
        b = nn.Parameter(
            torch.empty(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device),
            requires_grad=False,
        )
        fconv.weight, fconv.bias = w, b
        parent_name, _, child = bn_name.rpartition(".")
        setattr(fused.get_submodule(parent_name) if parent_name else fused, child, nn.Identity())
        pairs.append(_FoldedPair(conv, bn, w, b))
    with torch.no_grad():
        for p in pairs:
            p.refresh()
    return fused, pairs


# ----------------------------------------------------------------------------- the engine
@dataclass
class _Entry:
    name: str
    target: Tensor  # parameter (rebound) or buffer (written in place)
    is_param: bool
    offset: int
    numel: int
    view: bool  # the parameter's data is a view into the flat work buffer


class SurfaceEngine:
    """Evaluates ``model`` at grid points ``theta + x*dx + y*dy``; use as a context manager.

    ``data`` maps split names (``train``/``test``) to ``(inputs, targets)`` tensors. The model is
    restored on :meth:`close` (also on exceptions inside ``with``).

    Options: ``device`` (default CUDA when available; a model elsewhere is evaluated on a copy),
    ``batch_size`` (512, or ``"auto"``: the fastest of 64..512 timed once at the centre; the
    choice depends on timing, so reruns may round differently by ~1e-7), ``fuse_bn`` (fold BN into
    plain convs; off for binary networks),
    ``bn_recalibrate`` (recompute BN statistics at every point from ``calibration`` inputs, default
    the train split), ``forward_factory`` (``model -> forward``, called after each point's weights
    are set, e.g. a packed XNOR engine), ``channels_last``, ``compile`` (``torch.compile``), and
    ``points_per_forward`` (> 1: several points per forward via ``vmap``; a GPU option).
    """

    def __init__(
        self,
        model: nn.Module,
        directions: Directions,
        data: EvalData,
        *,
        device: str | torch.device | None = None,
        batch_size: int | str = 512,
        fuse_bn: bool = True,
        bn_recalibrate: bool = False,
        calibration: Tensor | None = None,
        forward_factory: ForwardFactory | None = None,
        channels_last: bool = False,
        compile: bool = False,
        points_per_forward: int = 1,
    ):
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
        if points_per_forward < 1:
            raise ValueError(f"points_per_forward must be >= 1, got {points_per_forward}")
        if points_per_forward > 1 and (forward_factory is not None or bn_recalibrate):
            raise ValueError(
                "points_per_forward > 1 (vmap) cannot be combined with forward_factory or bn_recalibrate"
            )
        if not data:
            raise ValueError("data must hold at least one split, e.g. {'train': (inputs, targets)}")
        self.model = model
        self.directions = directions
        self.device = resolve_device(device)
        self._auto_batch = batch_size == "auto"
        self.batch_size = 512 if self._auto_batch else int(batch_size)
        self.bn_recalibrate = bn_recalibrate
        self.forward_factory = forward_factory
        self.channels_last = channels_last
        self.points_per_forward = int(points_per_forward)
        self._opened = False
        self._fuse = fuse_bn and forward_factory is None
        self._compile = compile
        self._raw_data = data
        self._calibration = calibration
        self.fused_pairs = 0

    # ------------------------------------------------------------------ setup / teardown
    def open(self) -> SurfaceEngine:
        if self._opened:
            return self
        model = self.model
        first = next(iter(model.parameters()), None)
        if first is None:
            raise ValueError("the model has no parameters")
        self._owns_copy = first.device != self.device
        work = copy.deepcopy(model).to(self.device) if self._owns_copy else model
        self.work = work
        self._flags = [(m, m.training) for m in work.modules()]
        self._grads = [(p, p.requires_grad) for p in work.parameters()]
        self._saved_params = [(p, p.data) for p in work.parameters()]
        self._saved_buffers = [(b, b.detach().clone()) for b in work.buffers()]
        try:
            self._setup(work)
        except BaseException:
            self._restore()
            raise
        self._opened = True
        return self

    def _setup(self, work: nn.Module) -> None:
        work.eval()
        if self.channels_last:
            work.to(memory_format=torch.channels_last)
        params = dict(work.named_parameters())
        buffers = dict(work.named_buffers())
        dirs = self.directions.axes()
        entries, dx_parts, dy_parts, t0_parts = [], [], [], []
        flat_dtype = torch.float32
        for t in list(params.values()) + [b for b in buffers.values() if b.is_floating_point()]:
            if t.is_floating_point():
                flat_dtype = torch.promote_types(flat_dtype, t.dtype)
        offset = 0
        for name in self.directions.names:
            if name in params:
                target, is_param = params[name], True
            elif name in buffers and buffers[name].is_floating_point():
                target, is_param = buffers[name], False
            else:
                raise KeyError(f"direction entry {name!r} is not a floating parameter or buffer of the model")
            dx = dirs["x"][name]
            dy = dirs["y"][name] if "y" in dirs else None
            if tuple(dx.shape) != tuple(target.shape) or (
                dy is not None and tuple(dy.shape) != tuple(target.shape)
            ):
                raise ValueError(
                    f"direction entry {name!r} has shape {tuple(dx.shape)}, the model's is "
                    f"{tuple(target.shape)}"
                )
            if not bool(dx.any()) and (dy is None or not bool(dy.any())):
                continue  # never moves: leave the original tensor in place
            n = target.numel()
            entries.append(_Entry(name, target, is_param, offset, n, False))
            t0_parts.append(target.detach().reshape(-1).to(flat_dtype))
            dx_parts.append(dx.reshape(-1).to(self.device, flat_dtype))
            if dy is not None:
                dy_parts.append(dy.reshape(-1).to(self.device, flat_dtype))
            offset += n
        self._entries = entries
        empty = torch.zeros(0, dtype=flat_dtype, device=self.device)
        self._theta0 = torch.cat(t0_parts) if t0_parts else empty
        self._dx = torch.cat(dx_parts) if dx_parts else empty
        self._dy = torch.cat(dy_parts) if dy_parts else None
        self._flat = self._theta0.clone()
        self._tmp = torch.empty_like(self._theta0) if self._dy is not None else None
        for e in entries:
            chunk = self._flat[e.offset : e.offset + e.numel]
            if e.is_param and e.target.dtype == flat_dtype and e.target.is_contiguous():
                e.target.data = chunk.view(e.target.shape)
                e.view = True
            elif e.is_param:
                e.target.data = e.target.data.clone()  # private storage; the original is re-attached later
        self._data = {}
        for split, (xs, ys) in self._raw_data.items():
            if xs.shape[0] != ys.shape[0] or xs.shape[0] == 0:
                raise ValueError(f"data split {split!r}: {xs.shape[0]} inputs vs {ys.shape[0]} targets")
            xs = xs.to(self.device)
            if self.channels_last and xs.dim() == 4:
                xs = xs.contiguous(memory_format=torch.channels_last)
            self._data[split] = (xs, ys.to(self.device).long())
        if self._calibration is not None:
            self._calib = self._calibration.to(self.device)
        elif self.bn_recalibrate:
            self._calib = self._data.get("train", next(iter(self._data.values())))[0]
        self._bns = [
            m
            for m in work.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        self._forward: Callable[[Tensor], Tensor] = work
        self._pairs: list[_FoldedPair] = []
        if self._fuse and self.points_per_forward == 1:
            self._setup_fusion(work)
        if self._compile:
            self._forward = torch.compile(self._forward)
        if self._auto_batch:
            self.batch_size = self._tune_batch_size()

    def _tune_batch_size(self) -> int:
        """Fastest batch size per sample among 64..512 (memory-bound small models prefer small ones)."""
        import time

        xs = next(iter(self._data.values()))[0]
        candidates = [b for b in (64, 128, 256, 512) if b <= xs.shape[0]] or [xs.shape[0]]
        with torch.inference_mode():
            forward = self.forward_factory(self.work) if self.forward_factory is not None else self._forward
            forward(xs[: candidates[0]])  # warm-up
            best, best_rate = candidates[-1], float("inf")
            for b in candidates:
                t0 = time.perf_counter()
                forward(xs[:b])
                rate = (time.perf_counter() - t0) / b
                if rate < best_rate:
                    best, best_rate = b, rate
        return best

    def _setup_fusion(self, work: nn.Module) -> None:
        try:
            fused, pairs = fold_batchnorm(work)
        except Exception as exc:  # noqa: BLE001 - folding is an optimization only
            warnings.warn(f"BatchNorm folding skipped ({exc})", stacklevel=3)
            return
        if not pairs:
            return
        if self.channels_last:
            fused.to(memory_format=torch.channels_last)
        probe = next(iter(self._data.values()))[0][:64]
        with torch.inference_mode():
            ref = work(probe).float()
            got = fused(probe).float()
        tol = 1e-5 * max(1.0, float(ref.abs().max()))
        if not torch.allclose(ref, got, rtol=0, atol=tol):
            warnings.warn(
                f"BatchNorm folding changed the outputs by {float((ref - got).abs().max()):.3g}; "
                "evaluating without folding",
                stacklevel=3,
            )
            return
        self._forward, self._pairs = fused, pairs
        self.fused_pairs = len(pairs)

    def _restore(self) -> None:
        for p, data in getattr(self, "_saved_params", []):
            p.data = data
        with torch.no_grad():
            for b, saved in getattr(self, "_saved_buffers", []):
                b.copy_(saved)
        for m, flag in getattr(self, "_flags", []):
            m.training = flag
        for p, flag in getattr(self, "_grads", []):
            p.requires_grad_(flag)
        for name in (
            "_flat",
            "_tmp",
            "_theta0",
            "_dx",
            "_dy",
            "_data",
            "_forward",
            "_pairs",
            "_entries",
            "_calib",
        ):
            self.__dict__.pop(name, None)

    def close(self) -> None:
        """Restore the model (weights, buffers, requires_grad, train/eval flags) and free buffers."""
        if self._opened or hasattr(self, "_saved_params"):
            self._restore()
        self._opened = False

    def __enter__(self) -> SurfaceEngine:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ evaluation
    def set_point(self, x: float, y: float = 0.0) -> None:
        """Write ``theta0 + x*dx + y*dy`` into the model's parameters (and moved buffers)."""
        if not self._opened:
            raise RuntimeError("SurfaceEngine is not open; use it as a context manager")
        with torch.inference_mode():
            # theta0 + (x*dx + y*dy), rounded like Li et al.'s tool (w + (d0*x + d1*y)) so both give
            # bitwise-equal weights: binary networks turn 1-ulp differences into sign flips.
            torch.mul(self._dx, float(x), out=self._flat)
            if self._dy is not None:
                torch.mul(self._dy, float(y), out=self._tmp)
                self._flat.add_(self._tmp)
            self._flat.add_(self._theta0)
            for e in self._entries:
                if not e.view:
                    e.target.data.copy_(self._flat[e.offset : e.offset + e.numel].view(e.target.shape))
            if self.bn_recalibrate:
                self._recalibrate()
            for pair in self._pairs:
                pair.refresh()

    def _recalibrate(self) -> None:
        """Recompute BN running statistics at the current point (cumulative average over the set)."""
        moms = []
        for m in self._bns:
            moms.append(m.momentum)
            m.reset_running_stats()
            m.momentum = None
            m.train()
        try:
            for s in range(0, self._calib.shape[0], self.batch_size):
                self.work(self._calib[s : s + self.batch_size])
        finally:
            for m, mom in zip(self._bns, moms):
                m.momentum = mom
                m.eval()

    def _measure(self, forward: Callable[[Tensor], Tensor]) -> dict[str, float]:
        out = {}
        for split, (xs, ys) in self._data.items():
            loss = torch.zeros((), dtype=torch.float64, device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            for s in range(0, xs.shape[0], self.batch_size):
                logits = _as_float(forward(xs[s : s + self.batch_size]))
                yb = ys[s : s + self.batch_size]
                loss += F.cross_entropy(logits, yb, reduction="sum").double()
                correct += (logits.argmax(dim=1) == yb).sum()
            n = xs.shape[0]
            out[f"{split}_loss"] = float(loss) / n
            out[f"{split}_acc"] = 100.0 * float(correct) / n
        return out

    def evaluate(self, x: float, y: float = 0.0) -> dict[str, float]:
        """``{'<split>_loss': mean cross-entropy, '<split>_acc': top-1 percent}`` at ``(x, y)``."""
        self.set_point(x, y)
        with torch.inference_mode():
            forward = self.forward_factory(self.work) if self.forward_factory is not None else self._forward
            return self._measure(forward)

    def evaluate_many(self, points: Sequence[tuple[float, float]]) -> list[dict[str, float]]:
        """Evaluate several points; with ``points_per_forward > 1`` they share forwards via ``vmap``."""
        if self.points_per_forward == 1 or len(points) == 1:
            return [self.evaluate(*p) for p in points]
        if not self._opened:
            raise RuntimeError("SurfaceEngine is not open; use it as a context manager")
        from torch.func import functional_call, vmap

        k = len(points)
        xs_ = torch.tensor([p[0] for p in points], dtype=self._theta0.dtype, device=self.device)
        ys_ = torch.tensor([p[1] for p in points], dtype=self._theta0.dtype, device=self.device)
        stacked = {}
        with torch.inference_mode():
            for e in self._entries:
                sl = slice(e.offset, e.offset + e.numel)
                flat = self._theta0[sl][None] + xs_[:, None] * self._dx[sl][None]
                if self._dy is not None:
                    flat = flat + ys_[:, None] * self._dy[sl][None]
                stacked[e.name] = flat.reshape(k, *e.target.shape).to(e.target.dtype)
            work = self.work

            def one(params: dict[str, Tensor], xb: Tensor) -> Tensor:
                return functional_call(work, params, (xb,))

            batched = vmap(one, in_dims=(0, None))
            results: list[dict[str, float]] = [{} for _ in points]
            for split, (xs, ys) in self._data.items():
                loss = torch.zeros(k, dtype=torch.float64, device=self.device)
                correct = torch.zeros(k, dtype=torch.int64, device=self.device)
                for s in range(0, xs.shape[0], self.batch_size):
                    logits = _as_float(batched(stacked, xs[s : s + self.batch_size]))  # (k, B, C)
                    yb = ys[s : s + self.batch_size]
                    ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(k), reduction="none")
                    loss += ce.view(k, -1).sum(dim=1).double()
                    correct += (logits.argmax(dim=2) == yb[None]).sum(dim=1)
                n = xs.shape[0]
                for i in range(k):
                    results[i][f"{split}_loss"] = float(loss[i]) / n
                    results[i][f"{split}_acc"] = 100.0 * float(correct[i]) / n
        return results


def _as_float(logits: Tensor) -> Tensor:
    """Half-precision logits are promoted for the loss; float32/float64 are kept."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()

