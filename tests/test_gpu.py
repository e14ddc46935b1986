"""The CUDA path: the same networks on the GPU compute what they compute on the CPU, mixed precision
stays close to fp32, and a short training run works end to end. Skipped without a CUDA device;
benchmarks/gpu_check.sh runs them where there is one."""

import pytest
import torch
import torch.nn.functional as F
from training_fixtures import TinyImageTextSet, tiny_config

from lafite_core.config import NetworkConfig
from lafite_core.networks import Discriminator, Generator
from lafite_core.training import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
F_DIM = 32


def _networks(**overrides):
    cfg = NetworkConfig(
        resolution=64, z_dim=64, w_dim=64, mapping_layers=2, channel_base=2048, channel_max=128, **overrides
    )
    torch.manual_seed(0)
    return Generator(cfg, F_DIM), Discriminator(cfg, F_DIM)


def _inputs(device, n=8):
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(n, 64, generator=g), F.normalize(torch.randn(n, F_DIM, generator=g), dim=1)
    return z.to(device), c.to(device)


@pytest.fixture(autouse=True)
def _exact_fp32():
    """TF32 would change fp32 results at the 1e-3 level; the comparisons here are of the maths."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_images_and_logits_on_cuda_match_the_cpu():
    G, D = _networks()
    z, c = _inputs("cpu")
    with torch.no_grad():
        cpu_images = G(z, c, noise_mode="const")
        cpu_logits, _ = D(cpu_images, c)
        G, D = G.cuda(), D.cuda()
        gpu_images = G(z.cuda(), c.cuda(), noise_mode="const")
        gpu_logits, _ = D(gpu_images, c.cuda())
    assert (gpu_images.cpu() - cpu_images).abs().max() < 1e-4
    assert (gpu_logits.cpu() - cpu_logits).abs().max() < 1e-3


def test_fp16_blocks_stay_close_to_fp32_and_give_finite_gradients():
    G, D = _networks(num_fp16_res=2, conv_clamp=256.0)
    G, D = G.cuda(), D.cuda()
    z, c = _inputs("cuda")
    with torch.no_grad():
        full = G(z, c, noise_mode="const")
    G.set_mixed_precision(True)
    D.set_mixed_precision(True)
    images = G(z, c, noise_mode="const")
    assert images.dtype == torch.float32
    assert 0 < (images - full).abs().max() < 0.1  # fp16 really ran, and stayed close
    logits, _ = D(images, c)
    F.softplus(-logits).mean().backward()
    grads = [p.grad for p in list(G.parameters()) + list(D.parameters()) if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_short_mixed_precision_training_run_on_cuda(tmp_path):
    network = NetworkConfig(
        resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32, num_fp16_res=2
    )
    network.conv_clamp = 256.0
    cfg = tiny_config(tmp_path, device="cuda", mixed_precision=True, network=network)
    result = Trainer(cfg, TinyImageTextSet()).run()
    assert result.nimg >= 16 and result.last_checkpoint is not None
    assert all(
        torch.isfinite(torch.tensor(v)) for line in result.stats for k, v in line.items() if k.endswith("_total")
    )
