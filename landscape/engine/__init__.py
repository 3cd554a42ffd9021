"""The evaluation engine and its fast paths: a model evaluated at grid points ``theta + x*dx + y*dy``.

:mod:`.evaluate` (:class:`SurfaceEngine`, the tolerance contract :data:`TOLERANCE`), :mod:`.batching`
(deterministic batch sizes), :mod:`.folding` (BatchNorm folded into convs), :mod:`.providers`
(registered faster forwards, e.g. the packed 1-bit engine), :mod:`.winograd` and
:mod:`.winograd_epilogue` (F(4x4, 3x3) convolutions on the CPU), :mod:`.points` (evaluating a point:
the fast pass, its audit, the fallbacks to the reference path), :mod:`.audit` (what keeps a fast path
honest at every point) and :mod:`.margins` (per-image binary margins in one pass).
"""

from .evaluate import (
    TOLERANCE,
    EvalData,
    ForwardFactory,
    SurfaceEngine,
    find_conv_bn_pairs,
    fold_batchnorm,
    register_forward_provider,
    resolve_device,
)

__all__ = [
    "TOLERANCE",
    "EvalData",
    "ForwardFactory",
    "SurfaceEngine",
    "find_conv_bn_pairs",
    "fold_batchnorm",
    "register_forward_provider",
    "resolve_device",
]
