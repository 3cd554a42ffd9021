"""Small real-valued layers shared by the model families."""

from __future__ import annotations

from torch import Tensor, nn


class SqueezeExpand(nn.Module):
    """Squeeze-and-Expand gate: GAP -> 1x1 conv (squeeze) -> ReLU -> 1x1 conv (expand) -> sigmoid.

    BNext Info-RCP step 5 (paper Fig. 3c) and Real-to-Binary's data-driven rescale
    (Fig. 3b) are both this gate.  ``squeeze`` and ``expand`` are the "S" and "E" of the
    paper's I-S-E-O quantization notation (Table 7).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, reduction: int = 8) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        hidden = max(1, in_channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.squeeze = nn.Conv2d(in_channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, out_channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        """Returns the per-channel gate (N, C_out, 1, 1) computed from ``x``."""
        return self.gate(self.expand(self.act(self.squeeze(self.pool(x)))))
