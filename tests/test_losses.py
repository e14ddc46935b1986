"""Each loss term against a hand computation on small tensors."""

import math

import pytest
import torch

from lafite_core import losses as losses_module
from lafite_core.config import LossConfig
from lafite_core.losses import (
    LafiteLoss,
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


def test_mode_seeking_on_a_coarse_view_ignores_pixel_noise_but_not_layout():
    z_a, z_b = torch.zeros(1, 4), torch.ones(1, 4)
    base = torch.zeros(1, 3, 8, 8)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1  # +-1 pixel noise, mean 0
    noisy = base + 0.5 * checker
    moved = base.clone()
    moved[..., :4, :] = 0.5  # the top half changed: a layout difference
    assert mode_seeking_loss(base, noisy, z_a, z_b).item() == pytest.approx(1 / (0.5 + 1e-5))
    assert mode_seeking_loss(base, noisy, z_a, z_b, view=2).item() == pytest.approx(1e5)  # noise averages out
    assert mode_seeking_loss(base, moved, z_a, z_b, view=2).item() == pytest.approx(1 / (0.25 + 1e-5))


# ------------------------------------------------------------------------------ LafiteLoss
class _ToyG:
    """One w per sample (no style mixing); the image is z as a 1x2x2 picture."""

    def mapping(self, z, update_w_avg=False):
        return z[:, None, :]

    def synthesis(self, ws, c):
        return ws[:, 0].reshape(-1, 1, 2, 2)


class _LinearD:
    """logit = <w, x>, so grad_x logit = w for every sample; fixed feature heads."""

    weight = torch.tensor([0.5, -1.0, 2.0, 1.5]).reshape(1, 1, 2, 2)  # ||w||^2 = 7.5
    fts = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # cos with the conditions: [[0, r], [1, r]]

    def __call__(self, x, c):
        return (x * self.weight).sum(dim=[1, 2, 3]), self.fts


class _FixedClip:
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos with the conditions: [[1, r], [0, r]]

    def encode_image(self, images, augment=False):
        return self.features


def _y_to_x(sim, t):
    """InfoNCE's y->x direction by hand: for each condition j, a softmax over the images i."""
    e = [[math.exp(v / t) for v in row] for row in sim]
    return [-math.log(e[j][j] / sum(e[i][j] for i in range(2))) for j in range(2)]


def _softplus(v):
    return math.log1p(math.exp(v))


LAMBDAS = LossConfig(
    temperature=0.5,
    lambda_clip=3.0,
    lambda_disc=7.0,
    r1_gamma=4.0,
    r1_interval=16,
    pl_weight=2.0,
    pl_interval=4,
    pl_decay=0.01,
    pl_batch_shrink=1,
    style_mixing_prob=0.0,
)


def test_lafite_loss_weighs_each_term_by_its_own_lambda():
    r = 1 / math.sqrt(2)
    c = torch.tensor([[1.0, 0.0], [r, r]])
    z = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # fake logits 0.5, 1.5
    real = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]).reshape(2, 1, 2, 2)  # real logits -1, 2
    loss = LafiteLoss(_ToyG(), _LinearD(), _FixedClip(), LAMBDAS)
    con_clip = sum(_y_to_x([[1, r], [0, r]], 0.5)) / 2
    con_disc = sum(_y_to_x([[0, r], [1, r]], 0.5)) / 2
    assert abs(con_clip - con_disc) > 0.1  # so that swapping the lambdas changes both totals

    g_total, g_terms = loss.generator_main(z, c)
    g_adv = (_softplus(-0.5) + _softplus(-1.5)) / 2
    assert g_terms["G_con_clip"].item() == pytest.approx(con_clip, abs=1e-5)
    assert g_terms["G_con_disc"].item() == pytest.approx(con_disc, abs=1e-5)
    assert g_total.item() == pytest.approx(g_adv + 3.0 * con_clip + 7.0 * con_disc, abs=1e-5)

    d_total, _ = loss.discriminator_main(real, z, c)
    d_adv = (_softplus(1.0) + _softplus(0.5) + _softplus(-2.0) + _softplus(1.5)) / 2
    assert d_total.item() == pytest.approx(d_adv + 7.0 * con_disc, abs=1e-5)


def test_lazy_regularisers_are_scaled_by_gamma_over_two_or_their_weight_times_their_interval(monkeypatch):
    r = 1 / math.sqrt(2)
    c = torch.tensor([[1.0, 0.0], [r, r]])
    loss = LafiteLoss(_ToyG(), _LinearD(), _FixedClip(), LAMBDAS)
    r1_total, r1_terms = loss.discriminator_r1(torch.rand(2, 1, 2, 2), c)
    assert r1_terms["D_r1"].item() == pytest.approx(7.5)  # ||grad_x <w, x>||^2 = ||w||^2
    assert r1_total.item() == pytest.approx(7.5 * (4.0 / 2) * 16)

    monkeypatch.setattr(losses_module, "path_lengths", lambda images, ws: torch.tensor([1.0, 3.0]))
    pl_total, pl_terms = loss.generator_path_length(torch.randn(2, 4), c)
    pl_mean = 0.01 * 2.0  # the running mean starts at 0 and moves pl_decay of the way to the batch mean
    penalty = ((1.0 - pl_mean) ** 2 + (3.0 - pl_mean) ** 2) / 2
    assert pl_terms["G_pl"].item() == pytest.approx(penalty)
    assert pl_total.item() == pytest.approx(penalty * 2.0 * 4)
