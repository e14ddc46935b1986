"""Freeze what the unoptimised networks (benchmarks/network_speed.py's BASE_COMMIT: before
channels-last activations, gains folded into weights and in-place activations) compute, so that
tests/test_network_speedups.py compares against a file instead of the git history.

    python benchmarks/freeze_network_outputs.py      # needs the history; writes tests/fixtures/

For each setting it stores the weights, the inputs, the images (const and no noise), D's logits and
features on the reals, and one training step's fakes (random noise) and gradients.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "unoptimised-networks.safetensors"
F_DIM = 8
BATCH = 2
SETTINGS = [(32, None), (64, 0.5)]  # (resolution, conv_clamp)


def network_kwargs(resolution: int, conv_clamp: float | None) -> dict:
    """The small networks of each setting (shared with the test)."""
    return dict(
        resolution=resolution,
        z_dim=16,
        w_dim=16,
        mapping_layers=2,
        channel_base=resolution * 8,
        channel_max=32,
        conv_clamp=conv_clamp,
    )


def inputs(resolution: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(BATCH, 16, generator=g), F.normalize(torch.randn(BATCH, F_DIM, generator=g), dim=1)
    return {"z": z, "c": c, "reals": torch.rand(BATCH, 3, resolution, resolution, generator=g) * 2 - 1}


def step(G, D, z, c, reals, seed: int):
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


def main() -> None:
    spec = importlib.util.spec_from_file_location("network_speed", ROOT / "benchmarks" / "network_speed.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["network_speed"] = bench  # its dataclasses look themselves up there
    spec.loader.exec_module(bench)
    networks, config = bench.import_networks_at(bench.BASE_COMMIT)
    tensors = {}
    for resolution, conv_clamp in SETTINGS:
        key = f"r{resolution}"
        torch.manual_seed(0)
        G = networks.Generator(config.NetworkConfig(**network_kwargs(resolution, conv_clamp)), F_DIM)
        D = networks.Discriminator(config.NetworkConfig(**network_kwargs(resolution, conv_clamp)), F_DIM)
        tensors |= {f"{key}/weights/G.{k}": v for k, v in G.state_dict().items()}
        tensors |= {f"{key}/weights/D.{k}": v for k, v in D.state_dict().items()}
        x = inputs(resolution)
        with torch.no_grad():
            for mode in ("const", "none"):
                tensors[f"{key}/images_{mode}"] = G(x["z"], x["c"], noise_mode=mode)
            tensors[f"{key}/logits"], tensors[f"{key}/fts"] = D(x["reals"], x["c"])
        fakes, grads = step(G, D, x["z"], x["c"], x["reals"], seed=5)
        tensors[f"{key}/fakes"] = fakes
        tensors |= {f"{key}/grad/{k}": v for k, v in grads.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT, metadata={"commit": bench.BASE_COMMIT})
    print(f"{OUT}: {len(tensors)} tensors, {OUT.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
