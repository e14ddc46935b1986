"""Each loss term against a hand computation on small tensors."""

import math

import pytest
import torch

from lafite_core.losses import (
    contrastive_loss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
    mix_styles,
    mode_seeking_loss,
    path_lengths,
    r1_penalty,
)


def _hand_sims():
    # x0 = y0 = e1, x1 = e2, y1 = (e1 + e2)/sqrt2  -> cos matrix [[1, 1/r2], [0, 1/r2]]
    r = 1 / math.sqrt(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [r, r]])
    sim = [[1.0, r], [0.0, r]]
    return x, y, sim


def test_infonce_matches_hand_computation_both_directions():
    x, y, s = _hand_sims()
    t = 0.5
    e = [[math.exp(v / t) for v in row] for row in s]
    # x->y: softmax over j (rows); y->x: softmax over i (columns)
    x_to_y = [-math.log(e[0][0] / (e[0][0] + e[0][1])), -math.log(e[1][1] / (e[1][0] + e[1][1]))]
    y_to_x = [-math.log(e[0][0] / (e[0][0] + e[1][0])), -math.log(e[1][1] / (e[0][1] + e[1][1]))]
    got_y = contrastive_loss(x, y, t, "infonce", lam=0.0)
    got_x = contrastive_loss(x, y, t, "infonce", lam=1.0)
    got_mix = contrastive_loss(x, y, t, "infonce", lam=0.25)
    assert torch.allclose(got_y, torch.tensor(y_to_x), atol=1e-6)
    assert torch.allclose(got_x, torch.tensor(x_to_y), atol=1e-6)
    assert torch.allclose(got_mix, 0.25 * torch.tensor(x_to_y) + 0.75 * torch.tensor(y_to_x), atol=1e-6)


def test_official_form_applies_softmax_to_exp_scores():
    x, y, s = _hand_sims()
    t = 0.5
    scores = [[math.exp(v / t) for v in row] for row in s]
    ee = [[math.exp(v) for v in row] for row in scores]  # softmax over exp(sim/t)
    y_to_x = [
        -math.log(ee[0][0] / (ee[0][0] + ee[1][0]) * t),
        -math.log(ee[1][1] / (ee[0][1] + ee[1][1]) * t),
    ]
    got = contrastive_loss(x, y, t, "official", lam=0.0)
    assert torch.allclose(got, torch.tensor(y_to_x), atol=1e-6)
    # and it differs from correct InfoNCE
    assert not torch.allclose(got, contrastive_loss(x, y, t, "infonce"), atol=1e-3)


def test_contrastive_is_scale_invariant_and_rejects_unknown_form():
    x, y = torch.randn(5, 8), torch.randn(5, 8)
    a = contrastive_loss(x, y, 0.1)
    b = contrastive_loss(3 * x, 0.5 * y, 0.1)
    assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="contrastive_form"):
        contrastive_loss(x, y, 0.1, form="cosine")


def test_contrastive_loss_is_lowest_for_matched_pairs():
    x = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    matched = contrastive_loss(x, x, 0.1).mean()
    shuffled = contrastive_loss(x, x.roll(1, 0), 0.1).mean()
    assert matched < shuffled


def test_adversarial_losses_are_softplus():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([0.5, -3.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    assert torch.allclose(generator_adversarial_loss(fake), torch.tensor([sp(-0.5), sp(3.0)]))
    expected = torch.tensor([sp(-2.0) + sp(0.5), sp(1.0) + sp(-3.0)])
    assert torch.allclose(discriminator_adversarial_loss(real, fake), expected)


def test_r1_penalty_of_linear_discriminator_is_weight_norm():
    w = torch.randn(1, 3, 4, 4)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    logits = (x * w).sum(dim=[1, 2, 3])
    penalty = r1_penalty(x, logits)
    assert torch.allclose(penalty, w.square().sum().expand(2), atol=1e-5)


def test_path_lengths_of_linear_synthesis():
    n, num_ws, w_dim, scale = 3, 4, 5, 2.5
    ws = torch.randn(n, num_ws, w_dim, requires_grad=True)
    images = scale * ws[:, :, 0].reshape(n, 1, num_ws, 1)  # pixel l depends on ws[:, l, 0] only
    torch.manual_seed(0)
    got = path_lengths(images, ws)
    torch.manual_seed(0)
    noise = torch.randn_like(images) / math.sqrt(num_ws * 1)
    expected = ((scale * noise.reshape(n, num_ws)).square().mean(dim=1)).sqrt()
    assert torch.allclose(got, expected, atol=1e-6)


def test_style_mixing_replaces_layers_after_a_cutoff():
    z = torch.randn(2, 3)
    ws = torch.zeros(2, 6, 3)
    mapping = lambda z_: torch.ones(z_.shape[0], 6, 3)  # noqa: E731
    assert torch.equal(mix_styles(mapping, z, ws, prob=0.0), ws)
    torch.manual_seed(1)
    mixed = mix_styles(mapping, z, ws, prob=1.0)
    per_layer = mixed[0, :, 0]
    cutoff = int((per_layer == 0).sum())
    assert 1 <= cutoff < 6
    assert torch.all(per_layer[:cutoff] == 0) and torch.all(per_layer[cutoff:] == 1)


def test_mode_seeking_loss_is_large_when_latents_give_one_image_and_pushes_them_apart():
    z_a, z_b = torch.zeros(2, 4), torch.ones(2, 4)  # mean |z_a - z_b| = 1
    same = torch.zeros(2, 3, 8, 8)
    apart = torch.cat([torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.5)])
    assert mode_seeking_loss(same, same, z_a, z_b)[0] == pytest.approx(1e5)
    assert mode_seeking_loss(same, apart, z_a, z_b).tolist() == pytest.approx([1e5, 1 / (0.5 + 1e-5)])
    fake_b = torch.full((2, 3, 8, 8), 0.1, requires_grad=True)
    mode_seeking_loss(same, fake_b, z_a, z_b).sum().backward()
    assert (fake_b.grad < 0).all()  # descending the loss moves the second draw further from the first
