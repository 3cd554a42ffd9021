"""Forward providers: faster forwards that other packages offer the engine for the models they know.

``landscape`` never imports the packages that define special layers (``bnext`` and its packed
XNOR engine among them). Such a package registers a provider when it is imported::

    landscape.engine.providers.register_forward_provider("packed", predicate, build)

``predicate(model) -> bool`` says whether the provider applies (e.g. the model has binary
convolutions); ``build(model, probe, exact=...) -> ForwardFactory | None`` returns a forward
factory (``model -> callable``, called after each grid point's weights are set) or ``None`` when
it cannot serve this model (the engine then runs the model's own forward). A provider must
check itself against the model on ``probe``: bit for bit when ``exact`` is true, within the
engine's tolerance contract (:data:`landscape.engine.TOLERANCE`) otherwise. A factory may carry
``batch_size(sample_shape) -> int`` (its preferred evaluation batch), ``info() -> dict`` (what
it runs, stored in the surface file), ``margin_modules()`` and ``reference_forward()`` (the audit:
:mod:`landscape.engine.audit`) and ``concurrent_batches = True`` when its forward may run several
batches at once on threads whose torch calls are single-threaded (:mod:`landscape.threads`; the
engine then shares a point's batches out over such workers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

ForwardFactory = Callable[[nn.Module], Callable[[Tensor], Tensor]]
Build = Callable[..., Any]


@dataclass(frozen=True)
class ForwardProvider:
    name: str
    predicate: Callable[[nn.Module], bool]
    build: Build
    devices: tuple[str, ...] = ("cpu",)


_PROVIDERS: dict[str, ForwardProvider] = {}


def register_forward_provider(name: str, predicate: Callable[[nn.Module], bool], build: Build, *,
                              devices: tuple[str, ...] = ("cpu",)) -> None:
    """Register (or replace) the provider ``name`` for models where ``predicate(model)`` is true.

    ``devices``: device types the provider's forward runs on (the engine asks it only there).
    """
    _PROVIDERS[name] = ForwardProvider(name, predicate, build, tuple(devices))


def unregister_forward_provider(name: str) -> None:
    """Remove a provider (no error if it is not registered)."""
    _PROVIDERS.pop(name, None)


def forward_providers() -> list[ForwardProvider]:
    """Registered providers, in registration order."""
    return list(_PROVIDERS.values())


def import_declared_providers(model: nn.Module) -> None:
    """Import the modules that the model's module classes name in ``landscape_provider`` (a dotted
    module name, e.g. ``bnext.nn.BinaryConv2d.landscape_provider = "bnext.packed.forward"``); importing such
    a module registers its provider. This is how a plain ``compute_surface`` call finds the packed
    engine without ``landscape`` importing ``bnext``."""
    import importlib
    import warnings

    names = {getattr(type(m), "landscape_provider", None) for m in model.modules()} - {None}
    for name in sorted(names):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            warnings.warn(f"forward provider module {name!r} could not be imported ({exc})", stacklevel=3)


def find_forward(model: nn.Module, probe: Tensor, *, device_type: str, exact: bool
                 ) -> tuple[str, ForwardFactory] | None:
    """The first registered provider that applies to ``model`` on ``device_type`` and builds a factory."""
    import_declared_providers(model)
    for p in forward_providers():
        if device_type not in p.devices:
            continue
        try:
            applies = p.predicate(model)
        except Exception:  # noqa: BLE001 - a provider's predicate must not break evaluation
            applies = False
        if not applies:
            continue
        factory = p.build(model, probe, exact=exact)
        if factory is not None:
            return p.name, factory
    return None
