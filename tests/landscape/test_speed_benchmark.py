"""The benchmark-only CIFAR ResNet-20 of benchmarks/landscape_speed.py and its per-layer timing."""

import importlib.util
from pathlib import Path

import torch

from landscape.directions import random_directions
from landscape.engine import SurfaceEngine
from landscape.engine.winograd import WINOGRAD

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "landscape_speed.py"


def _bench():
    spec = importlib.util.spec_from_file_location("landscape_speed", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resnet20_is_li_et_al_s_model_and_every_conv_is_timed():
    """272,474 parameters and 21 convs (He et al.'s 16-32-64 ResNet-20 with 1x1 projection shortcuts, as in Li et
    al.'s tool); the engine's defaults fuse its epilogues and keep the model's values; --layers times each conv."""
    ls = _bench()
    torch.manual_seed(0)
    model = ls.ResNet20().eval()
    assert sum(p.numel() for p in model.parameters()) == 272_474
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 21 and "layers.3.shortcut.0" in convs
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, 32, 32, generator=g), torch.randint(0, 10, (24,), generator=g)
    from landscape.bn import recalibrate_bn

    recalibrate_bn(model, x)
    d = random_directions(model, seed=0, normalization="filter", bias_bn="ignore")
    ref = ls.ReferenceLoop(model, d, x, y)
    with SurfaceEngine(model, d, {"train": (x, y)}) as eng:
        assert eng.settings["conv_algorithms"]["layers.8.conv2"] == WINOGRAD
        assert eng.settings["winograd_fused_epilogues"] == 19  # every conv but the two shortcuts
        got = eng.evaluate(0.5, -0.5)
        layers, total = ls.layer_seconds(eng._forward, lambda a, b: eng.evaluate(a, b), (0.5, -0.5))
    want = ref(0.5, -0.5)
    assert abs(got["train_loss"] - want[0]) <= 1e-5 * want[0] and got["train_acc"] == want[1]
    assert set(layers) == set(convs) and 0 < sum(v for _, v in layers.values()) <= total
    assert layers["conv1"][0] == "onednn_fused_epilogue" and layers["layers.3.shortcut.0"][0] == "Conv2d"
