"""Small models and data for the landscape tests (no bnext needed)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SignSTE(torch.autograd.Function):
    """sign() forward, straight-through (clipped identity) backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class TinyBinaryConv(nn.Conv2d):
    """A Conv2d subclass that binarizes latent weights and inputs with sign (BN must not fold into it)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(SignSTE.apply(x), SignSTE.apply(self.weight), self.bias)


class Block(nn.Module):
    """Explicit conv/bn attributes (not a Sequential): found by the fx trace."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x))) + x


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 4, c: int = 6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.block = Block(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.block(self.stem(x))).flatten(1))


class TinyBinaryNet(nn.Module):
    def __init__(self, classes: int = 4, c: int = 6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c))
        self.bconv = TinyBinaryConv(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.bn(self.bconv(x))
        return self.fc(x.mean(dim=(2, 3)))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (so folding and recalibration are tested)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.rand(c, generator=g) * 0.4 - 0.2)
    return model


def make_model(kind: str = "cnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyCNN() if kind == "cnn" else TinyBinaryNet()
    return randomize_bn(model, seed).eval()


def make_data(n: int = 48, seed: int = 0, classes: int = 4, size: int = 8) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def reference_loss(model: nn.Module, directions, x: float, y: float, data: tuple[Tensor, Tensor]):
    """Independent recomputation: a deep copy moved to theta + x dx + y dy, eval mode, one forward."""
    import copy

    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        named = dict(m.named_parameters())
        named.update(dict(m.named_buffers()))
        for n, d in directions.x.items():
            step = x * d.double()
            if directions.y is not None:
                step = step + y * directions.y[n].double()
            named[n].copy_((named[n].double() + step).to(named[n].dtype))
        logits = m(data[0])
        loss = nn.functional.cross_entropy(logits.double(), data[1]).item()
        acc = 100.0 * (logits.argmax(1) == data[1]).double().mean().item()
    return loss, acc
