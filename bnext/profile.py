"""Operation and size counter with the BNN literature's rules (paper Table 2).

- BOPs  = multiply-accumulates (MACs) of the binary convolutions (:class:`BinaryConv2d`).
- FLOPs = MACs of real-valued ``Conv2d``/``Linear`` layers (stem, SE branch, downsample,
  classifier).  BN, PReLU, pooling and element-wise operations are not counted.
- QOPs  = MACs of quantized layers (a layer with a ``weight_bits`` attribute below 32,
  set by :mod:`bnext.quant`).
- OPs   = FLOPs + BOPs / 64 + QOPs / 8.  The QOPs / 8 term reproduces the OPs column of
  Table 2's post-quantized "†" rows (e.g. BNext-18†: 1.68e9 / 64 + 135.2e6 / 8 = 0.43e8).
- Size  = binary weights at 1 bit + quantized weights at their bit width + every other
  parameter at 32 bit, in MiB (2^20 bytes).  Buffers (BN statistics, ``tau``) are not counted.

MACs come from forward hooks and ``torch.utils.flop_counter.conv_flop_count`` on one
forward of the given input shape; nothing is written per model by hand.

CLI: ``python -m bnext.profile NAME|CHECKPOINT ... [--input-size 224] [--layers] [--threads N]``.
torch is imported inside the functions, so the CLI's ``--help`` is immediate.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .cli import ArgumentParser, add_threads_argument, progress, set_threads

if TYPE_CHECKING:
    import torch
    from torch import nn

MIB = 2**20


@dataclass
class LayerCount:
    name: str
    kind: str  # "binary", "real" or "quant"
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    weight_bits: int
    macs: int


@dataclass
class Profile:
    """Totals of one forward pass (see module docstring for the rules)."""

    bops: int
    flops: int
    qops: int
    params: int
    binary_params: int
    quant_params: int
    size_bits: int
    layers: list[LayerCount] = field(default_factory=list)

    @property
    def ops(self) -> float:
        return self.flops + self.bops / 64 + self.qops / 8

    @property
    def size_mib(self) -> float:
        return self.size_bits / 8 / MIB

    @property
    def fp32_size_mib(self) -> float:
        return self.params * 4 / MIB

    @property
    def compression(self) -> float:
        return self.fp32_size_mib / self.size_mib if self.size_bits else float("nan")

    @property
    def binary_mac_share(self) -> float:
        total = self.bops + self.flops + self.qops
        return self.bops / total if total else 0.0

    def as_dict(self, layers: bool = False) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "layers"}
        d.update(ops=self.ops, size_mib=self.size_mib, fp32_size_mib=self.fp32_size_mib,
                 compression=self.compression, binary_mac_share=self.binary_mac_share)
        if layers:
            d["layers"] = [asdict(layer) for layer in self.layers]
        return d


def _weight_bits(m: nn.Module) -> int:
    from .nn import BinaryConv2d

    if isinstance(m, BinaryConv2d):
        return 1
    return int(getattr(m, "weight_bits", 32))


def _macs(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    from torch import nn
    from torch.utils.flop_counter import conv_flop_count

    if isinstance(m, nn.Linear):
        return m.in_features * out.numel()
    w_shape = list(m.weight.shape)
    return conv_flop_count(list(x.shape), w_shape, list(out.shape), transposed=False) // 2


def count(model: nn.Module, input_size: tuple[int, ...] | int = (1, 3, 224, 224)) -> Profile:
    """Count BOPs, FLOPs, QOPs, OPs and size of ``model`` for one forward of ``input_size``.

    ``input_size`` is an NCHW shape or a single resolution (batch 1, 3 channels).
    Counts are per forward pass of that batch (use batch 1 for per-image numbers).
    """
    import torch
    from torch import nn

    from .nn import BinaryConv2d

    if isinstance(input_size, int):
        input_size = (1, 3, input_size, input_size)
    layers: list[LayerCount] = []
    handles = []

    def hook(name: str):
        def fn(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            bits = _weight_bits(m)
            kind = "binary" if isinstance(m, BinaryConv2d) else ("quant" if bits < 32 else "real")
            layers.append(LayerCount(
                name=name, kind=kind, type=type(m).__name__,
                input_shape=tuple(inputs[0].shape), output_shape=tuple(out.shape),
                params=sum(p.numel() for p in m.parameters(recurse=False)),
                weight_bits=bits, macs=int(_macs(m, inputs[0], out)),
            ))
        return fn

    for name, m in model.named_modules():
        if isinstance(m, (BinaryConv2d, nn.Conv2d, nn.Linear)):
            handles.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            model(torch.zeros(input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    bops = sum(layer.macs for layer in layers if layer.kind == "binary")
    flops = sum(layer.macs for layer in layers if layer.kind == "real")
    qops = sum(layer.macs for layer in layers if layer.kind == "quant")
    size_bits = 0
    params = binary_params = quant_params = 0
    for mod in model.modules():
        for pname, p in mod.named_parameters(recurse=False):
            n = p.numel()
            params += n
            if pname == "weight" and isinstance(mod, BinaryConv2d):
                binary_params += n
                size_bits += n
            elif pname == "weight" and _weight_bits(mod) < 32:
                quant_params += n
                size_bits += n * _weight_bits(mod)
            else:
                size_bits += 32 * n
    return Profile(bops=bops, flops=flops, qops=qops, params=params, binary_params=binary_params,
                   quant_params=quant_params, size_bits=size_bits, layers=layers)


def format_table(rows: list[tuple[str, Profile]]) -> str:
    """One row per model, in the units of paper Table 2."""
    head = (f"{'model':<24} {'BOPs(1e9)':>10} {'FLOPs(1e8)':>11} {'QOPs(1e6)':>10} {'OPs(1e8)':>9} "
            f"{'params(M)':>10} {'binary%':>8} {'size(MiB)':>10} {'fp32(MiB)':>10} {'x':>6}")
    lines = [head, "-" * len(head)]
    for name, p in rows:
        lines.append(
            f"{name:<24} {p.bops / 1e9:>10.3f} {p.flops / 1e8:>11.3f} {p.qops / 1e6:>10.2f} {p.ops / 1e8:>9.3f} "
            f"{p.params / 1e6:>10.2f} {100 * p.binary_params / max(p.params, 1):>8.1f} {p.size_mib:>10.2f} "
            f"{p.fp32_size_mib:>10.2f} {p.compression:>6.1f}"
        )
    return "\n".join(lines)


def format_layers(p: Profile) -> str:
    """Per-layer table (larq-summary style): precision, params, MACs."""
    head = f"{'layer':<44} {'type':<14} {'bits':>4} {'output':<20} {'params':>10} {'MACs':>14}"
    lines = [head, "-" * len(head)]
    for layer in p.layers:
        lines.append(f"{layer.name:<44} {layer.type:<14} {layer.weight_bits:>4} "
                     f"{str(layer.output_shape):<20} {layer.params:>10} {layer.macs:>14,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m bnext.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="registry names or checkpoint paths (default: the whole zoo)")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--width", type=float, default=None, help="width multiplier for binary models")
    ap.add_argument("--layers", action="store_true", help="also print the per-layer table")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_threads_argument(ap)
    args = ap.parse_args(argv)
    from . import models

    try:
        set_threads(args.threads)
    except ValueError as e:
        ap.error(str(e))
    rows = []
    names = models.list_models()
    opts = {} if args.width is None else {"width": args.width}
    for spec in progress(args.models or names, "counting", unit="model"):
        if spec in names:
            model = models.create(spec, num_classes=args.num_classes, input_size=args.input_size, **opts)
        else:
            try:
                from .quant import apply as _quant_apply  # noqa: F401  (registers the quantized rebuild)

                model = models.load(spec)
            except models.CheckpointError as e:
                print(f"error: {spec!r} is neither a registered model ({', '.join(names)}) "
                      f"nor a readable checkpoint: {e}", file=sys.stderr)
                return 2
        rows.append((spec, count(model, model.spec["input_size"])))
    if args.json:
        print(json.dumps({n: p.as_dict(layers=args.layers) for n, p in rows}, indent=2))
    else:
        print(format_table(rows))
        if args.layers:
            for n, p in rows:
                print(f"\n{n}\n{format_layers(p)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
