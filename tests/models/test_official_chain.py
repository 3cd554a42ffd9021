"""README "Official checkpoints" example on the fixture: import -> evaluate on an ImageNet-style
folder -> pack to .bnx -> quantize (Table 7 spec) -> a small landscape on a folder subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Subset

from bnext import models, packed, quant
from bnext.data import get_dataset
from bnext.models.__main__ import main

from .test_official import FIXTURE, needs_reference

pytestmark = needs_reference


def write_folder(root, classes=10, per_class=3, size=32, seed=0):
    """A tiny ImageNet-style folder: <root>/{train,val}/<class>/<i>.png, random 32x32 RGB images."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def evaluate(model, dataset, batch_size=8):
    """Logits, labels, top-1 (%) and mean cross-entropy of ``model`` on ``dataset``."""
    logits, labels = [], []
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            logits.append(model(x))
            labels.append(y)
    z, y = torch.cat(logits), torch.cat(labels)
    return z, y, 100.0 * (z.argmax(1) == y).float().mean().item(), F.cross_entropy(z, y).item()


@pytest.mark.slow
def test_official_checkpoint_chain(tmp_path):
    from landscape.directions import random_directions
    from landscape.store import read_surface
    from landscape.surface import compute_surface

    root = write_folder(tmp_path / "imagenet")
    ckpt = tmp_path / "official" / "bnext_t.pt"
    assert main(["import", str(FIXTURE), "-o", str(ckpt)]) == 0

    # evaluate on the folder (val split, the 32-px model's evaluation transform)
    model = models.load(ckpt).eval()
    val = get_dataset("imagenet", "test", root=root, input_size=32)
    assert len(val) == 30 and len(val.classes) == 10
    logits, labels, top1, loss = evaluate(model, val)
    assert logits.shape == (30, 10) and torch.isfinite(logits).all()
    x = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        assert torch.allclose(model(x), logits, atol=1e-5)  # batching does not change the result
    assert top1 == pytest.approx(100.0 * (logits.argmax(1) == labels).float().mean().item())

    # pack to .bnx: 1-bit weights, same outputs, a fraction of the checkpoint's size
    bnx = packed.save(packed.pack(model), tmp_path / "official" / "bnext_t.bnx")
    engine = packed.load(bnx)
    with torch.no_grad():
        got = engine(x)
    assert torch.allclose(got, logits, atol=1e-4 * max(1.0, logits.abs().max().item()))
    assert torch.equal(got.argmax(1), logits.argmax(1))
    assert bnx.stat().st_size < ckpt.stat().st_size / 3

    # quantize with Table 7's spec (I-S-E-O 8/8-4/8-4/8-8/8), calibrated on the train folder
    train = get_dataset("imagenet", "train", root=root, input_size=32)
    q = quant.quantize(model, quant.PAPER_SPEC)
    assert quant.calibrate(q, DataLoader(train, batch_size=10)) == 3
    q_logits, _, q_top1, _ = evaluate(q, val)
    assert not torch.equal(q_logits, logits) and torch.isfinite(q_logits).all() and 0 <= q_top1 <= 100
    qpath = quant.save(q, tmp_path / "official" / "bnext_t_q.pt")
    with torch.no_grad():
        assert torch.equal(quant.load(qpath).eval()(x), q(x))

    # a small 1D landscape on a 16-image subset of the val folder, packed forward
    subset = Subset(val, range(0, 30, 2)[:16])
    xs = torch.stack([subset[i][0] for i in range(len(subset))])
    ys = torch.tensor([subset[i][1] for i in range(len(subset))])
    factory = packed.packed_forward_factory(model, xs[:4], required=True)
    surface = compute_surface(tmp_path / "landscape.h5", model, random_directions(model, ndim=1, seed=0),
                              {"test": (xs, ys)}, "-0.5:0.5:3", progress=False, fuse_bn=False,
                              forward_factory=factory)
    s = read_surface(surface)
    assert s.complete and s.values["test_loss"].shape == (3,)
    with torch.no_grad():
        center = F.cross_entropy(model(xs), ys).item()
    assert s.values["test_loss"][1] == pytest.approx(center, rel=1e-4)
    assert s.values["test_loss"][0] != pytest.approx(center, rel=1e-4)
