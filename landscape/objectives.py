"""Losses and metrics a surface (or a Hessian) is taken of: parse a spec into a named objective.

Li et al.'s tool offers ``--loss_name crossentropy|mse``; loss-landscapes evaluates any metric
object. Here a spec names one of:

* losses (``--loss``): ``ce`` (mean cross-entropy, the default), ``mse`` (Li et al.'s: mean squared
  error between the softmax and the one-hot target, averaged over classes, i.e. ``nn.MSELoss`` on
  ``softmax(logits)``), ``label_smoothing:EPS`` (cross-entropy with label smoothing ``EPS``,
  Szegedy et al. 2016);
* metrics (``--metric``, repeatable): ``top1`` (percent, always computed), ``top5`` (percent; top-k
  with k = min(5, classes)), ``ece`` (expected calibration error in percent, 15 equal-width
  confidence bins, Guo et al. 2017), ``margin`` (mean logit margin: the true class's logit minus the
  largest other logit, Elsayed et al. 2018); any loss spec is accepted as a metric too;
* your own: ``package.module:callable`` or ``path/file.py:callable`` (a class is instantiated without
  arguments, e.g. ``torch.nn:SmoothL1Loss``). It is called as ``fn(logits, targets)`` and returns per-
  sample values of shape ``(batch,)`` or one scalar, read as the batch mean (``nn.CrossEntropyLoss()``
  style); the stored value is the mean over the split. A scalar batch mean aggregates exactly only
  for objectives that are means of per-sample terms; return per-sample values otherwise. Prefix a
  name to choose the stored name: ``brier=mymod:brier``.

Every objective returns *sums over the batch* (for ``ece``: per-bin counts and sums), so the value of
a split is exact whatever the batch size and however the split is cut into batches.

Stored names (so old files and tools keep reading): the loss is always ``<split>_loss`` (its spec is
the ``loss`` setting of the file and the figures' label), top-1 accuracy ``<split>_acc``, every other
metric ``<split>_<name>`` (``train_top5``, ``test_ece``, ``train_brier``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BUILTIN_LOSSES",
    "BUILTIN_METRICS",
    "Objective",
    "ObjectiveError",
    "Objectives",
    "make_objectives",
    "parse_loss",
    "parse_metric",
]

BUILTIN_LOSSES = ("ce", "mse", "label_smoothing:EPS")
BUILTIN_METRICS = ("top1", "top5", "ece", "margin")
ECE_BINS = 15
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = ("loss", "acc")


def is_user_spec(spec: str) -> bool:
    """Whether a loss/metric spec names a user callable (``package.module:callable``), not a built-in;
    built-in losses take class-index targets, a user's may take any."""
    return ":" in spec and not spec.lower().startswith("label_smoothing")


class ObjectiveError(ValueError):
    """A loss or metric spec is malformed, or a user's callable failed (one line, naming it)."""


@dataclass(frozen=True)
class Objective:
    """One loss or metric: ``stat(logits, targets)`` returns sums over the batch (float64),
    ``finish(summed, n)`` turns the sums over a whole split of ``n`` samples into the stored value."""

    name: str  # the dataset suffix: "loss", "acc", "top5", ...
    spec: str  # as given: "mse", "label_smoothing:0.1", "brier=mymod:brier"
    label: str  # for figures: "MSE loss", "top-5 accuracy (%)"
    stat: Callable[[Tensor, Tensor], Tensor] = field(repr=False)
    finish: Callable[[Tensor, int], float] = field(repr=False)
    differentiable: bool = False

    def value(self, logits: Tensor, targets: Tensor) -> float:
        """The objective of one batch (its mean over the batch)."""
        return self.finish(self.stat(logits, targets), int(targets.shape[0]))

    def batch_mean(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The batch mean as a differentiable tensor (a loss for :class:`landscape.curvature.hessian.Hessian`)."""
        if not self.differentiable:
            raise ObjectiveError(f"{self.spec!r} is a metric without a gradient; a Hessian needs a loss")
        return self.stat(logits, targets) / targets.shape[0]


def _mean(scale: float = 1.0) -> Callable[[Tensor, int], float]:
    return lambda s, n: scale * float(s) / n


def _float(logits: Tensor) -> Tensor:
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _ce(eps: float = 0.0) -> Callable[[Tensor, Tensor], Tensor]:
    return lambda z, y: F.cross_entropy(_float(z), y, reduction="sum", label_smoothing=eps).double()


def _mse(z: Tensor, y: Tensor) -> Tensor:
    p = torch.softmax(_float(z), dim=1)
    onehot = F.one_hot(y, p.shape[1]).to(p.dtype)
    return ((p - onehot) ** 2).mean(dim=1).sum().double()


def _topk(k: int) -> Callable[[Tensor, Tensor], Tensor]:
    def stat(z: Tensor, y: Tensor) -> Tensor:
        if k == 1:
            return (z.argmax(dim=1) == y).sum().double()
        top = z.topk(min(k, z.shape[1]), dim=1).indices
        return (top == y[:, None]).any(dim=1).sum().double()

    return stat


def _ece_stat(z: Tensor, y: Tensor) -> Tensor:
    """Per confidence bin: (count, summed confidence, summed correctness)."""
    p = torch.softmax(_float(z).double(), dim=1)
    conf, pred = p.max(dim=1)
    idx = (torch.ceil(conf * ECE_BINS).long() - 1).clamp_(0, ECE_BINS - 1)  # bin k holds (k/B, (k+1)/B]
    out = torch.zeros(3, ECE_BINS, dtype=torch.float64, device=z.device)
    out[0].index_add_(0, idx, torch.ones_like(conf))
    out[1].index_add_(0, idx, conf)
    out[2].index_add_(0, idx, (pred == y).double())
    return out


def _ece_finish(s: Tensor, n: int) -> float:
    """ECE = sum over bins of |accuracy - confidence| weighted by the bin's share (percent)."""
    return 100.0 * float((s[2] - s[1]).abs().sum()) / n


def _margin(z: Tensor, y: Tensor) -> Tensor:
    z = _float(z)
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    return (true - other).sum().double()


def _builtin(spec: str, as_metric: bool) -> Objective | None:
    s = spec.strip().lower()
    loss_name = "loss" if not as_metric else None
    if s in ("ce", "cross_entropy", "crossentropy"):
        return Objective(loss_name or "ce", "ce", "loss" if not as_metric else "cross-entropy", _ce(), _mean(), True)
    if s == "mse":
        return Objective(loss_name or "mse", "mse", "MSE loss" if not as_metric else "MSE", _mse, _mean(), True)
    if s.startswith("label_smoothing"):
        _, _, raw = s.partition(":")
        try:
            eps = float(raw)
        except ValueError:
            raise ObjectiveError(f"loss {spec!r}: expected label_smoothing:EPS with 0 <= EPS < 1, "
                                 "e.g. label_smoothing:0.1") from None
        if not 0.0 <= eps < 1.0:
            raise ObjectiveError(f"loss {spec!r}: the smoothing EPS must be in [0, 1), got {eps:g}")
        name = loss_name or f"ls{raw.replace('.', 'p')}"
        return Objective(name, f"label_smoothing:{eps:g}", f"label-smoothed loss (eps {eps:g})", _ce(eps), _mean(),
                         True)
    if not as_metric:
        return None
    if s in ("top1", "acc", "accuracy"):
        return Objective("acc", "top1", "accuracy (%)", _topk(1), _mean(100.0))
    if s == "top5":
        return Objective("top5", "top5", "top-5 accuracy (%)", _topk(5), _mean(100.0))
    if s == "ece":
        return Objective("ece", "ece", "calibration error ECE (%)", _ece_stat, _ece_finish)
    if s == "margin":
        return Objective("margin", "margin", "mean logit margin", _margin, _mean())
    return None


def _user(spec: str, name: str | None, what: str) -> Objective:
    """A ``module:callable`` spec (a class is instantiated without arguments)."""
    from .cli.custom import import_callable  # the one importer of user callables (model, data, objectives)

    target = spec.strip()
    fn = import_callable(target, what)
    if isinstance(fn, type):
        try:
            fn = fn()
        except Exception as exc:  # noqa: BLE001 - a user's class
            raise ObjectiveError(f"{what} {target!r}: cannot instantiate it without arguments ({exc})") from None
    return _wrap(fn, target if name is None else f"{name}={target}", name or target.rpartition(":")[2], what)


def _wrap(fn: Callable[[Tensor, Tensor], Any], spec: str, name: str, what: str) -> Objective:
    """A user's callable as an objective: per-sample values (summed) or a scalar batch mean (times the batch)."""
    label = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "objective"
    if not label[0].isalpha():
        label = f"m_{label}"
    shown = spec.partition("=")[2] if "=" in spec else spec

    def stat(z: Tensor, y: Tensor) -> Tensor:
        try:
            out = fn(z, y)
        except Exception as exc:  # noqa: BLE001 - a user's callable: report it in one line
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
            raise ObjectiveError(
                f"{what} {shown!r} raised {type(exc).__name__}: {msg} (called with logits of shape "
                f"{tuple(z.shape)} and targets of shape {tuple(y.shape)})"
            ) from None
        if not torch.is_tensor(out):
            out = torch.as_tensor(out, dtype=torch.float64, device=z.device)
        if out.dim() == 0:
            return out.double() * z.shape[0]
        if tuple(out.shape) == (z.shape[0],):
            return out.double().sum()
        raise ObjectiveError(
            f"{what} {shown!r} returned shape {tuple(out.shape)}; expected per-sample values "
            f"({z.shape[0]},) or a scalar batch mean"
        )

    if what == "--loss":
        return Objective("loss", spec, f"{label} loss", stat, _mean(), True)
    return Objective(label, spec, label, stat, _mean(), True)


def _split_name(spec: str) -> tuple[str | None, str]:
    """``name=rest`` -> (name, rest); a bare spec -> (None, spec)."""
    head, eq, rest = spec.partition("=")
    if eq and _NAME.match(head.strip()):
        return head.strip(), rest.strip()
    return None, spec.strip()


def parse_loss(spec: str | Objective | Callable[[Tensor, Tensor], Tensor] | None) -> Objective:
    """The loss of ``spec`` (``ce``, ``mse``, ``label_smoothing:EPS``, ``module:callable`` or a callable)."""
    if spec is None:
        spec = "ce"
    if isinstance(spec, Objective):
        return spec
    if callable(spec):
        return _from_callable(spec, getattr(spec, "__name__", type(spec).__name__), "--loss")
    _, body = _split_name(str(spec))
    found = _builtin(body, as_metric=False)
    if found is not None:
        return found
    if is_user_spec(body):
        return _user(body, None, "--loss")
    raise ObjectiveError(f"unknown loss {spec!r}; expected one of {', '.join(BUILTIN_LOSSES)} "
                         "or 'package.module:callable'")


def parse_metric(spec: str | Objective | Callable[[Tensor, Tensor], Tensor]) -> Objective:
    """The metric of ``spec`` (a built-in name, a loss spec, ``[name=]module:callable`` or a callable)."""
    if isinstance(spec, Objective):
        return spec
    if callable(spec):
        return _from_callable(spec, getattr(spec, "__name__", type(spec).__name__), "--metric")
    name, body = _split_name(str(spec))
    found = _builtin(body, as_metric=True)
    if found is None and is_user_spec(body):
        found = _user(body, name, "--metric")
    if found is None:
        raise ObjectiveError(f"unknown metric {spec!r}; expected one of {', '.join(BUILTIN_METRICS)}, a loss "
                             f"({', '.join(BUILTIN_LOSSES)}) or '[name=]package.module:callable'")
    if name is not None and found.name != name and found.name != "acc":
        found = Objective(name, f"{name}={found.spec}", found.label, found.stat, found.finish, found.differentiable)
    return found


def _from_callable(fn: Callable[[Tensor, Tensor], Any], name: str, what: str) -> Objective:
    """An API callable, wrapped like a ``module:callable`` spec."""
    spec = f"{getattr(fn, '__module__', None) or '?'}:{getattr(fn, '__qualname__', None) or type(fn).__name__}"
    return _wrap(fn, spec, name, what)


class _Accumulator:
    """Sums of every objective over the batches of one split (one grid point)."""

    def __init__(self, objectives: Objectives, split: str):
        self.objectives = objectives
        self.split = split
        self.sums: list[Tensor | None] = [None] * len(objectives.all)

    def update(self, logits: Tensor, targets: Tensor) -> None:
        for i, obj in enumerate(self.objectives.all):
            s = obj.stat(logits, targets).detach()
            self.sums[i] = s if self.sums[i] is None else self.sums[i] + s

    def result(self, n: int) -> dict[str, float]:
        out = {}
        for obj, s in zip(self.objectives.all, self.sums):
            out[f"{self.split}_{obj.name}"] = obj.finish(s, n) if s is not None else math.nan
        return out


@dataclass
class Objectives:
    """A loss (stored as ``<split>_loss``), top-1 accuracy (``<split>_acc``) and extra metrics."""

    loss: Objective
    metrics: list[Objective] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._all = [self.loss, _builtin("top1", True), *self.metrics]
        seen = {"loss", "acc"}
        for m in self.metrics:
            if m.name in seen:
                raise ObjectiveError(f"metric {m.spec!r} is stored as '{m.name}', which is taken; "
                                     f"name it: --metric NAME={m.spec.partition('=')[2] or m.spec}")
            seen.add(m.name)

    @property
    def all(self) -> list[Objective]:
        """The loss, top-1 accuracy and the metrics, in storing order."""
        return self._all  # type: ignore[return-value]

    @property
    def is_default(self) -> bool:
        return self.loss.spec == "ce" and not self.metrics

    def value_names(self, splits: Iterable[str]) -> list[str]:
        """Every stored value name for ``splits`` (``train_loss``, ``train_acc``, ``train_top5``, ...)."""
        return [f"{s}_{o.name}" for s in splits for o in self.all]

    def extra_names(self, splits: Iterable[str]) -> list[str]:
        """The value names beyond Li et al.'s ``<split>_loss``/``<split>_acc``."""
        return [f"{s}_{m.name}" for s in splits for m in self.metrics]

    def settings(self, splits: Iterable[str]) -> dict[str, Any]:
        """What surface files record (compared on reuse): ``loss`` and ``metrics`` (specs) and the extra
        value datasets (:data:`landscape.store.EXTRA_VALUES`)."""
        return {"loss": self.loss.spec, "metrics": [m.spec for m in self.metrics],
                "objective_values": self.extra_names(sorted(splits))}

    def accumulator(self, split: str) -> _Accumulator:
        return _Accumulator(self, split)

    def evaluate(self, model: Any, inputs: Tensor, targets: Tensor, *, batch_size: int = 256) -> dict[str, float]:
        """``{"loss": ..., "acc": ..., <metric>: ...}`` of ``model`` (eval mode, restored after) over the data."""
        acc = self.accumulator("_")
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                for s in range(0, inputs.shape[0], batch_size):
                    acc.update(model(inputs[s : s + batch_size]), targets[s : s + batch_size])
        finally:
            model.train(was)
        return {k[2:]: v for k, v in acc.result(int(inputs.shape[0])).items()}

    def check(self, logits: Tensor, targets: Tensor) -> dict[str, float]:
        """Evaluate every objective on one batch (fails fast, before any file is written)."""
        acc = self.accumulator("probe")
        with torch.no_grad():
            acc.update(logits, targets)
        return acc.result(int(targets.shape[0]))


def value_label(key: str, settings: dict[str, Any] | None = None) -> str | None:
    """A figure label for a stored value (``train_loss`` of an MSE surface -> ``"train MSE loss"``,
    ``test_top5`` -> ``"test top-5 accuracy (%)"``); None for Li et al.'s cross-entropy and top-1 names
    and unknown keys. Built-ins only: user callables are not imported to label a figure."""
    split, _, name = key.partition("_")
    if not name:
        return None
    settings = settings or {}
    if name == "loss":
        spec = str(settings.get("loss") or "ce")
        found = None if is_user_spec(spec) else _builtin(spec, as_metric=False)
        if spec == "ce":
            return None
        return f"{split} {found.label if found else spec.rpartition(':')[2] + ' loss'}"
    for spec in settings.get("metrics") or []:
        given, body = _split_name(str(spec))
        found = None if is_user_spec(body) else _builtin(body, as_metric=True)
        stored = given or (found.name if found else body.rpartition(":")[2])
        if stored == name:
            return f"{split} {found.label if found else stored}"
    return None


def make_objectives(loss: Any = "ce", metrics: Sequence[Any] | None = None) -> Objectives:
    """:class:`Objectives` from a loss spec and metric specs (``top1`` is implied and dropped)."""
    parsed = [parse_metric(m) for m in (metrics or ())]
    unique: list[Objective] = []
    for m in parsed:
        if m.name == "acc" or any(u.name == m.name and u.spec == m.spec for u in unique):
            continue
        unique.append(m)
    return Objectives(parse_loss(loss), unique)
