"""The faster networks compute what the unoptimised ones computed: same weights and inputs give the
same images, logits and gradients as commit f9c9d9f (before channels-last activations, gains folded
into weights and in-place activations), within fp32 rounding."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lafite_core import networks
from lafite_core.config import NetworkConfig

ROOT = Path(__file__).resolve().parents[1]
F_DIM = 24


def _network_speed():
    spec = importlib.util.spec_from_file_location("network_speed", ROOT / "benchmarks" / "network_speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["network_speed"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base_modules():
    bench = _network_speed()
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{bench.BASE_COMMIT}^{{commit}}"])
    if known.returncode != 0:
        pytest.skip(f"needs the git history: this clone lacks commit {bench.BASE_COMMIT}")
    return bench.import_networks_at(bench.BASE_COMMIT)


def _pair(base_modules, resolution: int, conv_clamp: float | None):
    base_networks, base_config = base_modules
    kwargs = dict(resolution=resolution, z_dim=32, w_dim=32, mapping_layers=2, channel_base=resolution * 16)
    kwargs.update(channel_max=64, conv_clamp=conv_clamp)
    torch.manual_seed(0)
    old_G = base_networks.Generator(base_config.NetworkConfig(**kwargs), F_DIM)
    old_D = base_networks.Discriminator(base_config.NetworkConfig(**kwargs), F_DIM)
    new_G, new_D = (
        networks.Generator(NetworkConfig(**kwargs), F_DIM),
        networks.Discriminator(NetworkConfig(**kwargs), F_DIM),
    )
    new_G.load_state_dict(old_G.state_dict())
    new_D.load_state_dict(old_D.state_dict())
    return (old_G, old_D), (new_G, new_D)


def _step(G, D, z, c, reals, seed):
    """The benchmark's step: G forward (random noise), D on fakes and reals, logistic loss, backward."""
    for p in list(G.parameters()) + list(D.parameters()):
        p.grad = None
    torch.manual_seed(seed)
    fakes = G(z, c)
    fake_logits, fake_fts = D(fakes, c)
    real_logits, _ = D(reals, c)
    loss = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean() + fake_fts.square().mean()
    loss.backward()
    grads = {f"G.{k}": p.grad.clone() for k, p in G.named_parameters()}
    grads |= {f"D.{k}": p.grad.clone() for k, p in D.named_parameters()}
    return fakes.detach(), grads


@pytest.mark.parametrize("resolution, conv_clamp", [(32, None), (64, 0.5)])
def test_images_logits_and_gradients_match_the_unoptimised_networks(base_modules, resolution, conv_clamp):
    (old_G, old_D), (new_G, new_D) = _pair(base_modules, resolution, conv_clamp)
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(4, 32, generator=g), F.normalize(torch.randn(4, F_DIM, generator=g), dim=1)
    reals = torch.rand(4, 3, resolution, resolution, generator=g) * 2 - 1

    with torch.no_grad():
        for mode in ("const", "none"):
            old, new = old_G(z, c, noise_mode=mode), new_G(z, c, noise_mode=mode)
            assert (old - new).abs().max() < 1e-4, mode
        old_logits, old_fts = old_D(reals, c)
        new_logits, new_fts = new_D(reals, c)
        assert torch.allclose(old_logits, new_logits, atol=1e-4) and torch.allclose(old_fts, new_fts, atol=1e-4)

    old_fakes, old_grads = _step(old_G, old_D, z, c, reals, seed=5)
    new_fakes, new_grads = _step(new_G, new_D, z, c, reals, seed=5)
    assert (old_fakes - new_fakes).abs().max() < 1e-4  # random noise: same draws, same order
    assert old_grads.keys() == new_grads.keys()
    for name, old in old_grads.items():
        scale = old.abs().max().clamp_min(1e-6)
        assert (old - new_grads[name]).abs().max() / scale < 1e-3, name
    assert any(old.abs().max() > 0 for old in old_grads.values())


def test_activations_stay_channels_last_through_both_networks():
    """Every convolution gets NHWC input, so oneDNN never converts layouts between layers."""
    cfg = NetworkConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=64)
    torch.manual_seed(0)
    G, D = networks.Generator(cfg, F_DIM), networks.Discriminator(cfg, F_DIM)
    layouts = []

    def record(module, inputs, output):
        layouts.append(output.is_contiguous(memory_format=torch.channels_last))

    for block in list(G.synthesis_network.blocks) + list(D.blocks):
        block.register_forward_hook(lambda m, i, o: record(m, i, o[0] if isinstance(o, tuple) else o))
    c = F.normalize(torch.randn(2, F_DIM), dim=1)
    D(G(torch.randn(2, 32), c), c)
    assert len(layouts) == len(G.synthesis_network.blocks) + len(D.blocks) and all(layouts)
