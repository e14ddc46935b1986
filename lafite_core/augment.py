"""DiffAugment: differentiable augmentations applied to every image the discriminator sees.

Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training" (NeurIPS 2020).
With little data, D memorises the real images and G stops learning. Augmenting *both* real and
generated images (with independent random parameters per sample) before D hides that shortcut,
and because every transform here is ordinary autograd code, G still receives gradients through
the augmentation. Official LAFITE trains without augmentation (x-flip only), so this is an option.

Images are [N, C, H, W] in [-1, 1]. Randomness comes from torch's global generator on the images'
device, so a seeded run (and a resumed one, whose RNG state is restored) is reproducible.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from lafite_core.registry import Registry

Tensor = torch.Tensor
AUGMENTATIONS: Registry[Callable[[Tensor], Tensor]] = Registry("DiffAugment transform")

TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the image side (DiffAugment's default)
CUTOUT_RATIO = 0.5  # erase a square of half the image side


def _uniform(n: int, x: Tensor, low: float, high: float) -> Tensor:
    """One random factor per sample, shaped to broadcast over [C, H, W]."""
    return torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) * (high - low) + low


@AUGMENTATIONS.register("color")
def color(x: Tensor) -> Tensor:
    """Random brightness (add U[-0.5, 0.5)), saturation (x U[0, 2)) and contrast (x U[0.5, 1.5))."""
    n = x.shape[0]
    x = x + _uniform(n, x, -0.5, 0.5)
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * _uniform(n, x, 0.0, 2.0) + grey
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * _uniform(n, x, 0.5, 1.5) + mean


@AUGMENTATIONS.register("translation")
def translation(x: Tensor, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Shift each image by a random whole number of pixels; uncovered pixels become 0 (mid-grey).

    Implemented as a gather from the source positions, so the gradient reaches every kept pixel.
    """
    n, c, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, [n, 1, 1], device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, [n, 1, 1], device=x.device)
    src_y = torch.arange(h, device=x.device).view(1, h, 1) - dy  # [N, H, 1]
    src_x = torch.arange(w, device=x.device).view(1, 1, w) - dx  # [N, 1, W]
    inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)  # [N, H, W]
    index = src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)  # flat source pixel, [N, H, W]
    index = index.reshape(n, 1, h * w).expand(n, c, h * w)
    shifted = x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)
    return shifted * inside.unsqueeze(1).to(x.dtype)


@AUGMENTATIONS.register("cutout")
def cutout(x: Tensor, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Zero one random square of side ratio * image side per image (it may overhang the border)."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(-(size_y // 2), h - size_y // 2 + 1, [n, 1, 1], device=x.device)
    left = torch.randint(-(size_x // 2), w - size_x // 2 + 1, [n, 1, 1], device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    erased = (ys >= top) & (ys < top + size_y) & (xs >= left) & (xs < left + size_x)
    return x * (~erased).unsqueeze(1).to(x.dtype)


def check_policy(policy: Sequence[str]) -> None:
    """Fail early (before training) on an unknown transform name."""
    for name in policy:
        AUGMENTATIONS.get(name)


def diff_augment(x: Tensor, policy: Sequence[str]) -> Tensor:
    """Apply the named transforms in order (DiffAugment's order is color, translation, cutout)."""
    for name in policy:
        x = AUGMENTATIONS.get(name)(x)
    return x


class AugmentedDiscriminator(torch.nn.Module):
    """D that augments its input first, so every loss term (including R1, whose gradient then flows
    back through the augmentation to the un-augmented real image) sees augmented images."""

    def __init__(self, D: torch.nn.Module, policy: Sequence[str]):
        super().__init__()
        check_policy(policy)
        self.D, self.policy = D, list(policy)

    def forward(self, img: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        return self.D(diff_augment(img, self.policy), c)
