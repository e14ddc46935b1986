"""The faster networks compute what the unoptimised ones computed: the same weights and inputs give
the same images, logits and gradients as the networks before channels-last activations, gains
folded into weights and in-place activations, within fp32 rounding. Their outputs are frozen in
tests/fixtures/unoptimised-networks.safetensors (benchmarks/freeze_network_outputs.py)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lafite_core import networks
from lafite_core.config import NetworkConfig

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "unoptimised-networks.safetensors"


def _freezer():
    spec = importlib.util.spec_from_file_location(
        "freeze_network_outputs", ROOT / "benchmarks" / "freeze_network_outputs.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["freeze_network_outputs"] = module
    spec.loader.exec_module(module)
    return module


FREEZER = _freezer()


def _frozen(resolution: int) -> dict[str, torch.Tensor]:
    prefix = f"r{resolution}/"
    return {k[len(prefix) :]: v for k, v in load_file(FIXTURE).items() if k.startswith(prefix)}


@pytest.mark.parametrize("resolution, conv_clamp", FREEZER.SETTINGS)
def test_images_logits_and_gradients_match_the_unoptimised_networks(resolution, conv_clamp):
    frozen = _frozen(resolution)
    cfg = NetworkConfig(**FREEZER.network_kwargs(resolution, conv_clamp))
    G, D = networks.Generator(cfg, FREEZER.F_DIM), networks.Discriminator(cfg, FREEZER.F_DIM)
    weights = {k[len("weights/") :]: v for k, v in frozen.items() if k.startswith("weights/")}
    G.load_state_dict({k[2:]: v for k, v in weights.items() if k.startswith("G.")})
    D.load_state_dict({k[2:]: v for k, v in weights.items() if k.startswith("D.")})
    x = FREEZER.inputs(resolution)

    with torch.no_grad():
        for mode in ("const", "none"):
            assert (G(x["z"], x["c"], noise_mode=mode) - frozen[f"images_{mode}"]).abs().max() < 1e-4, mode
        logits, fts = D(x["reals"], x["c"])
        assert torch.allclose(logits, frozen["logits"], atol=1e-4) and torch.allclose(fts, frozen["fts"], atol=1e-4)

    fakes, grads = FREEZER.step(G, D, x["z"], x["c"], x["reals"], seed=5)
    assert (fakes - frozen["fakes"]).abs().max() < 1e-4  # random noise: same draws, same order
    old_grads = {k[len("grad/") :]: v for k, v in frozen.items() if k.startswith("grad/")}
    assert old_grads.keys() == grads.keys()
    for name, old in old_grads.items():
        scale = old.abs().max().clamp_min(1e-6)
        assert (old - grads[name]).abs().max() / scale < 1e-3, name
    assert any(old.abs().max() > 0 for old in old_grads.values())


def test_activations_stay_channels_last_through_both_networks():
    """Every convolution gets NHWC input, so oneDNN never converts layouts between layers."""
    cfg = NetworkConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=64)
    torch.manual_seed(0)
    G, D = networks.Generator(cfg, 24), networks.Discriminator(cfg, 24)
    layouts = []

    def record(module, inputs, output):
        layouts.append(output.is_contiguous(memory_format=torch.channels_last))

    for block in list(G.synthesis_network.blocks) + list(D.blocks):
        block.register_forward_hook(lambda m, i, o: record(m, i, o[0] if isinstance(o, tuple) else o))
    c = F.normalize(torch.randn(2, 24), dim=1)
    D(G(torch.randn(2, 32), c), c)
    assert len(layouts) == len(G.synthesis_network.blocks) + len(D.blocks) and all(layouts)
