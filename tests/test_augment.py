"""DiffAugment: each transform keeps shapes, does what it says, and passes gradients."""

import pytest
import torch

from lafite_core.augment import (
    AUGMENTATIONS,
    AugmentedDiscriminator,
    color,
    cutout,
    diff_augment,
    translation,
)


def test_registry_lists_the_three_transforms():
    assert AUGMENTATIONS.names() == ["color", "cutout", "translation"]


def test_unknown_transform_is_named():
    with pytest.raises(KeyError, match="zoom"):
        diff_augment(torch.zeros(1, 3, 8, 8), ["color", "zoom"])


@pytest.mark.parametrize("policy", [["color"], ["translation"], ["cutout"], ["color", "translation", "cutout"]])
def test_shapes_and_gradients(policy):
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    y = diff_augment(x, policy)
    assert y.shape == x.shape and y.dtype == x.dtype
    (grad,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_translation_is_an_integer_shift_with_zero_fill():
    torch.manual_seed(1)
    x = torch.randn(6, 2, 16, 16)
    y = translation(x)
    max_shift = 2  # 16 * 0.125
    for img, out in zip(x, y):
        matches = []
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                expected = torch.zeros_like(img)
                ys, yd = (slice(0, 16 - dy), slice(dy, 16)) if dy >= 0 else (slice(-dy, 16), slice(0, 16 + dy))
                xs, xd = (slice(0, 16 - dx), slice(dx, 16)) if dx >= 0 else (slice(-dx, 16), slice(0, 16 + dx))
                expected[:, yd, xd] = img[:, ys, xs]
                if torch.equal(out, expected):
                    matches.append((dy, dx))
        assert len(matches) == 1


def test_translation_gradient_is_the_kept_pixel_mask():
    torch.manual_seed(2)
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    y = translation(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    # Each source pixel lands at most once, so its gradient is 1 if kept, 0 if shifted out.
    assert set(grad.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(grad.sum(dim=[1, 2, 3]), (y != 0).sum(dim=[1, 2, 3]).float())


def test_cutout_erases_one_square_of_half_the_side():
    torch.manual_seed(3)
    x = torch.ones(64, 3, 16, 16)
    y = cutout(x)
    erased = (y == 0).all(dim=1)  # [N, H, W]
    assert torch.equal((y == 0).any(dim=1), erased)  # same pixels in every channel
    for mask in erased:
        rows, cols = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
        height, width = len(rows), len(cols)
        assert mask.sum() == height * width  # a rectangle
        assert 4 <= height <= 8 and 4 <= width <= 8  # side 8, clipped by the border to >= 4
    assert (erased.sum(dim=[1, 2]) == 64).sum() > 10  # many squares lie fully inside


def test_color_keeps_a_flat_image_flat_and_shifts_it_by_at_most_half():
    torch.manual_seed(4)
    x = torch.full((32, 3, 8, 8), 0.2)
    y = color(x)
    per_image = y.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    shift = per_image[:, 0] - 0.2
    assert shift.abs().max() <= 0.5 and shift.std() > 0.1


def test_same_seed_same_augmentation():
    x = torch.randn(4, 3, 16, 16)
    torch.manual_seed(5)
    a = diff_augment(x, ["color", "translation", "cutout"])
    torch.manual_seed(5)
    b = diff_augment(x, ["color", "translation", "cutout"])
    assert torch.equal(a, b)


def test_augmented_discriminator_passes_gradient_to_the_real_image():
    class TinyD(torch.nn.Module):
        def forward(self, img, c):
            return img.mean(dim=[1, 2, 3]) + c.sum(dim=1), img.flatten(1)[:, :4]

    torch.manual_seed(6)
    D = AugmentedDiscriminator(TinyD(), ["translation", "cutout"])
    img = torch.randn(2, 3, 16, 16, requires_grad=True)
    logits, fts = D(img, torch.zeros(2, 5))
    assert logits.shape == (2,) and fts.shape == (2, 4)
    (grad,) = torch.autograd.grad(logits.sum(), img)
    assert grad.abs().sum() > 0
    with pytest.raises(KeyError, match="blur"):
        AugmentedDiscriminator(TinyD(), ["blur"])
