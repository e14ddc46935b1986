"""The pieces together: one G step and one D step at 32x32 with the tiny open_clip encoder on CPU."""

import pytest
import torch

from lafite_core.config import EncoderConfig, LossConfig, NetworkConfig, PerturbationConfig
from lafite_core.encoders import load_encoder
from lafite_core.losses import LafiteLoss
from lafite_core.networks import Discriminator, Generator
from lafite_core.perturbations import build_perturbation

SMALL = NetworkConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=1024, channel_max=64)


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    encoder = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=None))
    f = encoder.feature_dim
    G, D = Generator(SMALL, f), Discriminator(SMALL, f)
    perturb = build_perturbation(PerturbationConfig(kind="official"), f)
    return encoder, G, D, perturb


def _batch(encoder, perturb, n=4):
    real = torch.rand(n, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        c = perturb(encoder.encode_image(real), source="image")
    return real, torch.randn(n, 32), c


def test_clip_loss_reaches_generator_through_frozen_encoder(parts):
    encoder, G, D, perturb = parts
    real, z, c = _batch(encoder, perturb)
    loss = LafiteLoss(G, D, encoder, LossConfig(lambda_disc=0.0, style_mixing_prob=0.0))
    G.zero_grad(set_to_none=True)
    img = G(z, c)
    clip_term = loss._contrastive(encoder.encode_image(img, augment=True), c).mean()
    clip_term.backward()
    grads = [p.grad for p in G.synthesis_network.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in encoder.parameters())
    assert not any(p.requires_grad for p in encoder.parameters())


def test_one_generator_and_one_discriminator_step_change_parameters(parts):
    encoder, G, D, perturb = parts
    real, z, c = _batch(encoder, perturb)
    loss = LafiteLoss(G, D, encoder, LossConfig())
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99))
    g_before = [p.detach().clone() for p in G.parameters()]
    d_before = [p.detach().clone() for p in D.parameters()]

    opt_g.zero_grad(set_to_none=True)
    g_total, g_terms = loss.generator_main(z, c)
    g_total.backward()
    assert set(g_terms) == {"G_adv", "G_con_clip", "G_con_disc"}
    assert all(torch.isfinite(v) for v in g_terms.values())
    assert all(p.grad is None for p in encoder.parameters())
    opt_g.step()
    assert sum((a - b).abs().sum() for a, b in zip(G.parameters(), g_before)) > 0
    D.zero_grad(set_to_none=True)  # the G loss also reaches D; the training loop freezes D instead

    opt_d.zero_grad(set_to_none=True)
    d_total, d_terms = loss.discriminator_main(real, z, c)
    d_total.backward()
    assert {"D_adv", "D_con_disc"} <= set(d_terms)
    opt_d.step()
    assert sum((a - b).abs().sum() for a, b in zip(D.parameters(), d_before)) > 0


@pytest.mark.slow
def test_regularisers_are_finite_and_differentiable(parts):
    encoder, G, D, perturb = parts
    real, z, c = _batch(encoder, perturb)
    loss = LafiteLoss(G, D, encoder, LossConfig())
    r1, r1_terms = loss.discriminator_r1(real, c)
    r1.backward()
    assert torch.isfinite(r1) and r1_terms["D_r1"] >= 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())
    pl, pl_terms = loss.generator_path_length(z, c)
    pl.backward()
    assert torch.isfinite(pl) and loss.pl_mean > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.synthesis_network.parameters())
