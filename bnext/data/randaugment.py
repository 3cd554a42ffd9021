"""RandAugment with a random magnitude per op: the paper's RandAugment(7, 0.5) (section 5.1, Table 6).

torchvision's ``RandAugment`` applies every op at one fixed magnitude. The paper (via timm's
``rand-m7-mstd0.5``) draws each op's magnitude from N(7, 0.5), clipped to the magnitude scale.
:class:`RandAugmentMStd` adds exactly that to torchvision's v2 transform and keeps its op set and
op ranges otherwise. Two choices follow timm:

* the magnitude scale is timm's 0..10 (``num_magnitude_bins=11``), so magnitude 7 means 70 % of each
  op's range (with torchvision's default 31 bins, 7 would mean only 23 %);
* the sampled magnitude is a real number: an op's strength is interpolated linearly between the
  neighbouring bins (Posterize's bit count is then rounded).

The op set is torchvision's (Identity, ShearX/Y, TranslateX/Y, Rotate, Brightness, Color, Contrast,
Sharpness, Posterize, Solarize, AutoContrast, Equalize), which differs slightly from timm's list.
Works on PIL images, uint8 tensors and float tensors in [0, 1] (apply it before normalization).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2._utils import get_size

__all__ = ["RandAugmentMStd"]


class RandAugmentMStd(v2.RandAugment):
    """RandAugment whose per-op magnitude is drawn from N(magnitude, magnitude_std).

    The draw is clipped to [0, num_magnitude_bins - 1]; ``magnitude_std=0`` gives torchvision's
    behaviour (fixed magnitude). Relies on private helpers of torchvision 0.29's ``RandAugment``.
    """

    def __init__(self, num_ops: int = 2, magnitude: float = 7.0, magnitude_std: float = 0.5,
                 num_magnitude_bins: int = 11,
                 interpolation: InterpolationMode | int = InterpolationMode.BILINEAR,
                 fill: Any = None) -> None:
        if num_magnitude_bins < 2:
            raise ValueError(f"num_magnitude_bins must be at least 2, got {num_magnitude_bins}")
        if not 0 <= magnitude <= num_magnitude_bins - 1:
            raise ValueError(f"magnitude must lie in [0, {num_magnitude_bins - 1}], got {magnitude}")
        if magnitude_std < 0:
            raise ValueError(f"magnitude_std must be >= 0, got {magnitude_std}")
        super().__init__(num_ops=num_ops, magnitude=0, num_magnitude_bins=num_magnitude_bins,
                         interpolation=interpolation, fill=fill)
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)

    def sample_magnitude(self) -> float:
        """One magnitude on the bin scale: N(magnitude, magnitude_std) clipped to the scale."""
        m = self.magnitude
        if self.magnitude_std > 0:
            m = m + self.magnitude_std * float(torch.randn(()))
        return min(max(m, 0.0), float(self.num_magnitude_bins - 1))

    @staticmethod
    def _interpolate(magnitudes: torch.Tensor, position: float) -> float:
        low = int(position)
        high = min(low + 1, len(magnitudes) - 1)
        frac = position - low
        return float(magnitudes[low]) * (1.0 - frac) + float(magnitudes[high]) * frac

    def forward(self, *inputs: Any) -> Any:
        flat_inputs_with_spec, image_or_video = self._flatten_and_extract_image_or_video(inputs)
        height, width = get_size(image_or_video)

        for _ in range(self.num_ops):
            transform_id, (magnitudes_fn, signed) = self._get_random_item(self._AUGMENTATION_SPACE)
            magnitudes = magnitudes_fn(self.num_magnitude_bins, height, width)
            if magnitudes is not None:
                magnitude: float = self._interpolate(magnitudes, self.sample_magnitude())
                if transform_id == "Posterize":
                    magnitude = int(round(magnitude))
                if signed and torch.rand(()) <= 0.5:
                    magnitude *= -1
            else:
                magnitude = 0.0
            image_or_video = self._apply_image_or_video_transform(
                image_or_video, transform_id, magnitude, interpolation=self.interpolation, fill=self._fill
            )

        return self._unflatten_and_insert_image_or_video(flat_inputs_with_spec, image_or_video)

    def extra_repr(self) -> str:
        return (f"num_ops={self.num_ops}, magnitude={self.magnitude}, magnitude_std={self.magnitude_std}, "
                f"num_magnitude_bins={self.num_magnitude_bins}")
