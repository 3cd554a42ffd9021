"""Hessian-vector products over fixed parts of the data, run in parallel on single-threaded workers.

The mean loss over ``n`` samples is the sum over parts ``P`` of ``(|P| / n) * mean loss over P`` (exact for
a loss that is a per-sample mean, which is what :class:`~.hessian.Hessian` assumes for its batches; the
model is in eval mode, so samples do not interact), hence ``H v = sum_P (|P| / n) H_P v``. Each part's
product is a double backward (the gradient with ``create_graph``, then the gradient of ``<grad, v>``)
that needs nothing from the other parts, so the parts run on the workers of :mod:`landscape.threads`
(each torch call single-threaded: on small convolutions two single-threaded graphs on two cores beat one
graph on two threads). The parts depend only on the data and ``part_size``, never on the number of
workers, and their products are added in part order in float64, so a product is bit-identical for any
number of workers (each worker, and a single-threaded caller, computes the same part the same way).

Memory: a part's forward and first-backward graph does not depend on ``v``, so it is kept between
products at the same weights (one double backward per further product) while the kept graphs fit in
``max_graph_bytes`` (their saved tensors, measured when built; when not all fit, room for one rebuilt part
is left in the budget); the other parts are rebuilt for each product, one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..threads import cpu_workers, run_ordered, worker_pool

#: samples per part at most (a batch is cut into parts of at most this many samples)
DEFAULT_PART_SIZE = 32
#: ``part_size="auto"``: the largest power of two <= DEFAULT_PART_SIZE whose graph (saved tensors, per sample)
#: fits this; a part's double backward holds several times its graph (BNext-T: 0.92 GiB per 32 samples, 7-8 GB
#: resident while one such part was rebuilt), so wide models get smaller parts
PART_GRAPH_BYTES = 256 * 2**20
#: bytes of kept gradient graphs (saved tensors, parameters not counted) before parts are rebuilt per product;
#: resident memory is about twice the saved bytes (BNext-T top-5 on 256 samples: 5.3-5.7 GB resident at this
#: budget, 8.5-9 GB at 3 GiB)
DEFAULT_MAX_GRAPH_BYTES = 2**30

#: the products' own worker threads (see landscape.threads.worker_pool)
POOL = "hessian-worker"

LossFn = Callable[[Tensor, Tensor], Tensor]
Grads = tuple[Tensor | None, ...]


@dataclass
class Part:
    """Samples ``start:stop`` of the data, weighted ``(stop - start) / n`` in the mean loss."""

    start: int
    stop: int
    weight: float


def graph_bytes_per_sample(model: nn.Module, params: Sequence[nn.Parameter], inputs: Tensor, targets: Tensor,
                           loss_fn: LossFn) -> float:
    """Saved-tensor bytes of the gradient graph per added sample: the difference between graphs of 4 and 2
    samples, halved (tensors saved once per graph, e.g. a binary layer's ``sign(W)``, cancel; a model need not
    take a batch of one). The model must be prepared as for :class:`PartProducts`."""
    sizes = []
    for k in (2, 4):
        k = min(k, inputs.shape[0])
        probe = PartProducts(model, params, inputs[:k], targets[:k], loss_fn, [Part(0, k, 1.0)], keep=False,
                             workers=1)
        grads, size = probe._graph(probe.parts[0], measure=True)
        del grads
        sizes.append((k, size))
    (k2, s2), (k4, s4) = sizes
    return (s4 - s2) / (k4 - k2) if k4 > k2 else s4 / max(1, k4)


def auto_part_size(per_sample: float, limit: int = PART_GRAPH_BYTES, cap: int = DEFAULT_PART_SIZE) -> int:
    """The largest power of two <= ``cap`` whose graph (``per_sample`` bytes a sample) fits ``limit``, at least 1."""
    size = cap
    while size > 1 and size * per_sample > limit:
        size //= 2
    return size


def make_parts(n: int, batch_size: int, part_size: int) -> list[Part]:
    """The data ``0:n`` cut into batches of ``batch_size``, each cut into near-equal parts of at most
    ``part_size`` samples (a function of these three numbers only)."""
    if part_size < 1:
        raise ValueError(f"part_size must be >= 1, got {part_size}")
    parts = []
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        pieces = -(-(e - s) // part_size)
        bounds = [s + (e - s) * i // pieces for i in range(pieces + 1)]
        parts.extend(Part(a, b, (b - a) / n) for a, b in zip(bounds[:-1], bounds[1:]))
    return parts


def _saved_bytes(skip: set[int]) -> tuple[dict[int, int], Callable[[Tensor], Tensor]]:
    """A ``saved_tensors_hooks`` pack hook that records each saved storage's size once (not those in ``skip``)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip:
            seen[ptr] = storage.nbytes()
        return t

    return seen, pack


class PartProducts:
    """``H v`` as the ordered float64 sum of the parts' double backwards (see the module docstring).

    ``model`` must already be prepared by the caller (eval mode, ``requires_grad`` only on ``params``)
    whenever :meth:`graphs` or :meth:`hvp` run; the workers inherit that state.
    """

    def __init__(self, model: nn.Module, params: Sequence[nn.Parameter], inputs: Tensor, targets: Tensor,
                 loss_fn: LossFn, parts: list[Part], *, keep: bool = True,
                 max_graph_bytes: int | None = DEFAULT_MAX_GRAPH_BYTES, workers: int | None = None) -> None:
        self.model, self.params, self.loss_fn = model, list(params), loss_fn
        self.inputs, self.targets, self.parts = inputs, targets, parts
        self.keep, self.max_graph_bytes, self.workers = keep, max_graph_bytes, workers
        self._kept: tuple[tuple[int, ...], list[Grads | None]] | None = None
        self.graph_bytes = 0  # bytes of the kept graphs
        self.part_bytes: list[int] = []  # saved bytes of each part's graph when last built (kept or not)

    # -- one part ----------------------------------------------------------------------
    def _graph(self, part: Part, measure: bool = False) -> tuple[Grads, int]:
        """The part's weighted gradient with its graph (``create_graph``) and the graph's saved bytes."""
        xb, yb = self.inputs[part.start : part.stop], self.targets[part.start : part.stop]
        with torch.enable_grad():  # grad mode is per thread
            if not measure:
                loss = self.loss_fn(self.model(xb), yb) * part.weight
                return torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True), 0
            seen, pack = _saved_bytes({p.untyped_storage().data_ptr() for p in self.params})
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = self.loss_fn(self.model(xb), yb) * part.weight
                grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            return grads, sum(seen.values())

    def _product(self, grads: Grads, vs: Sequence[Tensor], retain: bool) -> Tensor | None:
        """``d<grads, v>/d params`` for one part, flat (None: the loss is linear in every parameter)."""
        pairs = [(g, u) for g, u in zip(grads, vs) if g is not None and g.requires_grad]
        if not pairs:
            return None
        with torch.enable_grad():
            hv = torch.autograd.grad([g for g, _ in pairs], self.params, grad_outputs=[u for _, u in pairs],
                                     allow_unused=True, retain_graph=retain)
        # flat in the parameters' dtype (half the bytes of float64 while waiting to be added; the float64
        # sum of hvp() promotes each element exactly, so the total is the same)
        return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(hv, self.params)])

    def _run(self, i: int, vs: Sequence[Tensor]) -> Tensor | None:
        kept = self._kept[1][i] if self._kept is not None else None
        if kept is not None:
            return self._product(kept, vs, retain=True)
        grads, _ = self._graph(self.parts[i])
        return self._product(grads, vs, retain=False)

    # -- the kept graphs -----------------------------------------------------------------
    def versions(self) -> tuple[int, ...]:
        return tuple(t._version for t in (*self.model.parameters(), *self.model.buffers()))

    def refresh(self) -> None:
        """Build the kept graphs (parts in order, while they fit in ``max_graph_bytes``) unless those kept are
        still at the current weights (version counters; ``.data`` assignments go unnoticed: :meth:`release`)."""
        if not self.keep:
            return
        versions = self.versions()
        if self._kept is not None and self._kept[0] == versions:
            return
        self.release()
        # built a round of one part per worker at a time, so that graphs beyond the budget never coexist
        workers = self._workers(len(self.parts))
        kept: list[Grads | None] = [None] * len(self.parts)
        self.part_bytes = []
        total, room = 0, True
        for first in range(0, len(self.parts), workers):
            built = self._ordered(lambda i: self._graph(self.parts[i], measure=True),
                                  range(first, min(first + workers, len(self.parts))))
            for i, (grads, size) in enumerate(built, start=first):
                self.part_bytes.append(size)
                # leave room for the part rebuilt per product (one at a time, see hvp)
                reserve = max(self.part_bytes) if i + 1 < len(self.parts) else 0
                room = room and (self.max_graph_bytes is None
                                 or total + size + reserve <= self.max_graph_bytes)
                if room:
                    kept[i] = grads
                    total += size
            del built
            if not room:
                break
        self.graph_bytes = total
        self._kept = (versions, kept)

    def release(self) -> None:
        """Drop the kept graphs (their activations) now."""
        self._kept = None
        self.graph_bytes = 0

    @property
    def kept_parts(self) -> int:
        return 0 if self._kept is None else sum(g is not None for g in self._kept[1])

    # -- products ----------------------------------------------------------------------
    def _workers(self, items: int) -> int:
        workers = cpu_workers() if self.workers is None else max(1, int(self.workers))
        return min(workers, items)

    def _ordered(self, fn: Callable[[int], object], items: range) -> list:
        """``fn(i)`` for the items on this product's workers, results in item order."""
        return run_ordered(fn, items, self._workers(len(items)), POOL)

    def hvp(self, vs: Sequence[Tensor]) -> Tensor | None:
        """``sum_P H_P v`` (each part weighted), float64, added in part order; ``vs`` split like the parameters.

        Kept parts run a round of one per worker at a time; parts whose graph did not fit the budget are
        rebuilt one at a time, on one single-threaded worker (a rebuilt part holds its whole graph and its
        double backward at once: two side by side took BNext-T to 8.9 GiB). Besides the sum, at most one
        round's products are alive, so memory does not grow with the number of parts; every part is computed
        single-threaded in any case, so the product does not depend on the number of workers."""
        self.refresh()
        n = len(self.parts)
        kept = self._kept[1] if self._kept is not None else [None] * n
        step = self._workers(n)
        acc: Tensor | None = None
        first = 0
        while first < n:
            # a round: up to `step` consecutive kept parts, or one part to rebuild
            last = first + 1
            if kept[first] is not None:
                while last < min(n, first + step) and kept[last] is not None:
                    last += 1
            if kept[first] is not None or step == 1:
                round_ = self._ordered(lambda i: self._run(i, vs), range(first, last))
            else:  # on a worker all the same: single-threaded, as every other part
                round_ = [worker_pool(1, POOL).submit(self._run, first, vs).result()]
            for r in round_:
                if r is not None:
                    acc = r.to(torch.float64) if acc is None else acc.add_(r)
            first = last
        return acc
