import pytest
import torch
from torchvision.transforms import v2

from bnext.data import (
    AUGMENTATIONS,
    AugmentSpec,
    RandAugmentMStd,
    build_batch_transform,
    build_transform,
    parse_augment,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SPECS = [*AUGMENTATIONS, "randaugment+mixup", "standard+cutmix", "mixup+cutmix", "standard+cutmix+repeated"]


def test_parse_augment():
    assert parse_augment("none") == AugmentSpec([], [], False)
    assert parse_augment("standard") == AugmentSpec(["standard"], [], False)
    assert parse_augment("randaugment+mixup") == AugmentSpec(["standard", "randaugment"], ["mixup"], False)
    assert parse_augment("Cutmix + standard + repeated") == AugmentSpec(["standard"], ["cutmix"], True)
    assert parse_augment("repeated") == AugmentSpec([], [], True)
    spec = parse_augment("mixup+cutmix")
    assert spec.batch == ["mixup", "cutmix"] and parse_augment(spec) is spec
    assert str(parse_augment("randaugment+cutmix")) == "standard+randaugment+cutmix"


@pytest.mark.parametrize("bad", ["autoaugment", "standard+", "standard+standard", ""])
def test_parse_errors_list_valid_names(bad):
    with pytest.raises(ValueError) as err:
        parse_augment(bad)
    if bad != "standard+standard":
        assert all(name in str(err.value) for name in AUGMENTATIONS)
    with pytest.raises(ValueError):
        build_transform(bad, train=True, input_size=32, mean=MEAN, std=STD)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("size", [32, 64])
def test_every_spec_runs_on_a_batch(spec, size):
    torch.manual_seed(0)
    batch = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3])
    for train in (True, False):
        t = build_transform(spec, train=train, input_size=size, mean=MEAN, std=STD)
        out = t(batch)
        assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (4, 3, size, size)
        floats = t(batch.float() / 255)  # float images in [0, 1] (digits) work too
        assert floats.shape == (4, 3, size, size)
    mix = build_batch_transform(spec, num_classes=10)
    if not parse_augment(spec).batch:
        assert mix is None
        return
    images, soft = mix(out, labels)
    assert images.shape == out.shape and soft.shape == (4, 10) and soft.dtype == torch.float32
    torch.testing.assert_close(soft.sum(1), torch.ones(4))


def test_eval_is_deterministic_and_normalizes():
    x = torch.rand(2, 3, 32, 32)
    t = build_transform("randaugment+mixup", train=False, input_size=32, mean=MEAN, std=STD)
    torch.testing.assert_close(t(x), (x - 0.5) / 0.25)
    big = build_transform("standard", train=False, input_size=224, mean=MEAN, std=STD)
    assert big(torch.rand(3, 300, 400)).shape == (3, 224, 224)
    assert build_transform("none", train=True, input_size=8, mean=MEAN, std=STD, resize=False)(
        torch.rand(3, 8, 8)).shape == (3, 8, 8)


def test_standard_crop_and_flip_change_images():
    torch.manual_seed(1)
    x = torch.rand(3, 32, 32)
    t = build_transform("standard", train=True, input_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    outs = [t(x) for _ in range(8)]
    assert all(o.shape == x.shape for o in outs)
    assert any(not torch.equal(o, x) for o in outs)
    # each output is x, maybe mirrored, shifted by at most 4 px with zero padding (RandomCrop(32, padding=4))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    crops = [padded[:, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
    for o in outs:
        assert any(torch.equal(o, c) or torch.equal(o, c.flip(-1)) for c in crops)


def test_mixup_and_cutmix_give_soft_labels():
    torch.manual_seed(0)
    images = torch.randn(8, 3, 32, 32)
    labels = torch.arange(8)
    for name in ("mixup", "cutmix"):
        mix = build_batch_transform(name, num_classes=8)
        mixed_images, soft = mix(images, labels)
        torch.testing.assert_close(soft.sum(1), torch.ones(8))
        assert (soft > 0).sum(1).max() == 2  # two classes per mixed sample
        assert soft.max() < 1
        assert not torch.equal(mixed_images, images)
    assert build_batch_transform("standard", 10) is None
    with pytest.raises(ValueError, match="2 classes"):
        build_batch_transform("mixup", 1)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_randaugment_changes_images_keeps_shape_dtype(dtype):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    if dtype == torch.float32:
        x = x.float() / 255
    ra = RandAugmentMStd()
    outs = [ra(x) for _ in range(5)]
    assert all(o.shape == x.shape and o.dtype == dtype for o in outs)
    assert sum(not torch.equal(o, x) for o in outs) >= 4
    if dtype == torch.float32:
        assert all(float(o.min()) >= 0 and float(o.max()) <= 1 for o in outs)


def test_randaugment_magnitude_sampling():
    torch.manual_seed(0)
    ra = RandAugmentMStd(num_ops=2, magnitude=7, magnitude_std=0.5)
    assert ra.num_ops == 2 and ra.num_magnitude_bins == 11
    draws = torch.tensor([ra.sample_magnitude() for _ in range(4000)])
    assert abs(float(draws.mean()) - 7) < 0.05 and abs(float(draws.std()) - 0.5) < 0.05
    top = RandAugmentMStd(magnitude=10, magnitude_std=2)
    assert max(top.sample_magnitude() for _ in range(200)) == 10.0
    assert RandAugmentMStd(magnitude_std=0).sample_magnitude() == 7.0
    assert RandAugmentMStd._interpolate(torch.linspace(0, 1, 11), 7.5) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        RandAugmentMStd(magnitude=11)
    with pytest.raises(ValueError):
        RandAugmentMStd(magnitude_std=-1)


def test_randaugment_without_std_equals_torchvision():
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    ours = RandAugmentMStd(magnitude=7, magnitude_std=0)
    ref = v2.RandAugment(num_ops=2, magnitude=7, num_magnitude_bins=11, interpolation=v2.InterpolationMode.BILINEAR)
    for seed in range(20):
        torch.manual_seed(seed)
        a = ours(x)
        torch.manual_seed(seed)
        b = ref(x)
        assert torch.equal(a, b)
