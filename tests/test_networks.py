"""Conditional StyleGAN2 generator and projection discriminator (LAFITE structures 2 and 1)."""

import pytest
import torch
import torch.nn.functional as F

from lafite_core import checkpoint as ckpt
from lafite_core.config import NetworkConfig, to_dict
from lafite_core.networks import ConditionalStyle, Discriminator, Generator, ScaledStyle, minibatch_stddev
from lafite_core.sampler import export_generator, load_generator

F_DIM = 16  # condition size; deliberately not 512


def small_cfg(resolution: int = 32, **overrides) -> NetworkConfig:
    kwargs = dict(
        resolution=resolution, z_dim=32, w_dim=32, mapping_layers=2, channel_base=resolution * 8, channel_max=32
    )
    kwargs.update(overrides)
    return NetworkConfig(**kwargs)


def condition(n: int, f: int = F_DIM) -> torch.Tensor:
    return F.normalize(torch.randn(n, f), dim=1)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def nets32():
    torch.manual_seed(0)
    cfg = small_cfg(32)
    return Generator(cfg, F_DIM), Discriminator(cfg, F_DIM)


# ---------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("resolution,batch", [(32, 3), (64, 2), (256, 2)])
def test_generator_and_discriminator_shapes(resolution, batch):
    torch.manual_seed(0)
    cfg = small_cfg(resolution, channel_base=resolution * 4, channel_max=16)
    G, D = Generator(cfg, F_DIM), Discriminator(cfg, F_DIM)
    z, c = torch.randn(batch, cfg.z_dim), condition(batch)
    ws = G.mapping(z)
    assert ws.shape == (batch, G.num_ws, cfg.w_dim)
    assert G.num_ws == 2 * (resolution.bit_length() - 1) - 2  # 2 per block, 1 at 4x4, +1 toRGB
    img = G.synthesis(ws, c)
    assert img.shape == (batch, 3, resolution, resolution) and img.dtype == torch.float32
    logits, fts = D(img, c)
    assert logits.shape == (batch,) and fts.shape == (batch, F_DIM)
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()
    assert (G.z_dim, G.w_dim, G.feature_dim, G.resolution) == (32, 32, F_DIM, resolution)


# The authors' networks at channel_base 32768, channel_max 512, z = w = f = 512, 8 mapping layers,
# change 256: counted from their Generator and Discriminator classes.
OFFICIAL_COUNTS = {256: (44_997_026, 29_126_785), 512: (48_653_799, 29_245_505), 1024: (52_030_476, 29_275_169)}


@pytest.mark.parametrize("resolution", sorted(OFFICIAL_COUNTS))
def test_paper_config_parameter_counts_equal_the_official_ones(resolution):
    cfg = NetworkConfig(resolution=resolution, channel_base=32768, channel_max=512, z_dim=512, w_dim=512)
    with torch.device("meta"):
        G, D = Generator(cfg, 512), Discriminator(cfg, 512)
    assert (n_params(G), n_params(D)) == OFFICIAL_COUNTS[resolution]
    assert G.num_ws == 2 * (resolution.bit_length() - 1) - 2


@pytest.mark.parametrize("resolution", [16, 48, 2048, 100])
def test_bad_resolution_raises(resolution):
    with pytest.raises(ValueError, match="resolution"):
        Generator(small_cfg(resolution), F_DIM)
    with pytest.raises(ValueError, match="resolution"):
        Discriminator(small_cfg(resolution), F_DIM)


def test_feature_dim_must_match_config():
    with pytest.raises(ValueError, match="feature_dim"):
        Generator(small_cfg(feature_dim=8), F_DIM)
    G = Generator(small_cfg(feature_dim=F_DIM), F_DIM)
    assert G.feature_dim == F_DIM


def test_wrong_condition_shape_raises(nets32):
    G, D = nets32
    with pytest.raises(ValueError, match="condition"):
        G(torch.randn(2, G.z_dim), condition(2, F_DIM + 1))
    with pytest.raises(ValueError, match="condition"):
        D(torch.randn(2, 3, 32, 32), condition(3))


# ---------------------------------------------------------------------------------- mapping


def test_truncation_psi_zero_gives_w_avg_and_cutoff_limits_it(nets32):
    G, _ = nets32
    G.mapping_network.w_avg.copy_(torch.randn(G.w_dim))
    z = torch.randn(4, G.z_dim)
    ws = G.mapping(z, truncation_psi=0.0)
    assert torch.allclose(ws, G.mapping_network.w_avg.expand_as(ws))
    full = G.mapping(z)
    cut = G.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
    assert torch.allclose(cut[:, :3], G.mapping_network.w_avg.expand(4, 3, -1))
    assert torch.equal(cut[:, 3:], full[:, 3:])
    half = G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(half, 0.5 * (full + G.mapping_network.w_avg), atol=1e-6)


def test_w_avg_is_an_ema_updated_only_on_request(nets32):
    G, _ = nets32
    avg = G.mapping_network.w_avg
    avg.zero_()
    z = torch.randn(8, G.z_dim)
    G.mapping(z)
    assert torch.all(avg == 0)
    ws = G.mapping(z, update_w_avg=True)
    assert torch.allclose(avg, (1 - 0.995) * ws[:, 0].mean(dim=0), atol=1e-7)


def test_condition_does_not_enter_mapping(nets32):
    G, _ = nets32
    z = torch.randn(2, G.z_dim)
    ws = G.mapping(z)
    # Every broadcast w is the same vector: the mapping sees z only.
    assert torch.equal(ws[:, 0], ws[:, -1])


# ---------------------------------------------------------------------------------- synthesis


def test_condition_changes_the_image_and_const_noise_is_deterministic(nets32):
    G, _ = nets32
    z = torch.randn(2, G.z_dim)
    c1, c2 = condition(2), condition(2)
    a = G(z, c1, noise_mode="const")
    assert torch.equal(a, G(z, c1, noise_mode="const"))
    b = G(z, c2, noise_mode="const")
    assert (a - b).abs().mean() > 1e-3


def test_noise_modes(nets32):
    G, _ = nets32
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    try:
        z, c = torch.randn(2, G.z_dim), condition(2)
        r1, r2 = G(z, c, noise_mode="random"), G(z, c, noise_mode="random")
        assert (r1 - r2).abs().mean() > 1e-4
        assert torch.equal(G(z, c, noise_mode="none"), G(z, c, noise_mode="none"))
        assert not torch.allclose(G(z, c, noise_mode="none"), G(z, c, noise_mode="const"))
        with pytest.raises(ValueError, match="noise_mode"):
            G(z, c, noise_mode="loud")
    finally:
        with torch.no_grad():
            for name, p in G.named_parameters():
                if name.endswith("noise_strength"):
                    p.zero_()


def test_every_generator_parameter_gets_a_gradient():
    torch.manual_seed(0)
    G = Generator(small_cfg(32), F_DIM)
    img = G(torch.randn(3, G.z_dim), condition(3))
    img.square().mean().backward()
    missing = [name for name, p in G.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


# ---------------------------------------------------------------------------------- discriminator


def test_projection_logit_is_out_plus_fts_dot_c_per_sample(nets32):
    _, D = nets32
    img, c = torch.randn(4, 3, 32, 32), condition(4)
    captured = {}
    handle = D.epilogue.out.register_forward_hook(lambda m, i, o: captured.update(out=o.squeeze(1)))
    try:
        logits, fts = D(img, c)
    finally:
        handle.remove()
    assert torch.allclose(logits, captured["out"] + (fts * c).sum(dim=1), atol=1e-5)
    # Changing sample 2's condition changes only sample 2's logit.
    c2 = c.clone()
    c2[2] = condition(1)[0]
    logits2, fts2 = D(img, c2)
    assert torch.equal(fts2, fts)
    assert torch.allclose(logits2[[0, 1, 3]], logits[[0, 1, 3]])
    assert not torch.allclose(logits2[2], logits[2])


@pytest.mark.parametrize("batch", [1, 3, 6, 7])
def test_discriminator_handles_batches_not_divisible_by_the_group(nets32, batch):
    _, D = nets32
    logits, fts = D(torch.randn(batch, 3, 32, 32), condition(batch))
    assert logits.shape == (batch,) and torch.isfinite(logits).all()


def test_minibatch_stddev_by_hand():
    x = torch.randn(4, 2, 3, 3)
    y = minibatch_stddev(x, group_size=2)  # groups: samples {0, 2} and {1, 3}
    assert y.shape == (4, 3, 3, 3)
    assert torch.equal(y[:, :2], x)
    std02 = ((x[0] - x[2]).abs() / 2).mean()
    std13 = ((x[1] - x[3]).abs() / 2).mean()
    expected = torch.stack([std02, std13, std02, std13])
    assert torch.allclose(y[:, 2, 0, 0], expected, atol=1e-4)
    assert torch.allclose(y[:, 2], y[:, 2, :1, :1].expand(-1, 3, 3))
    # 6 samples with group 4: the largest divisor of 6 up to 4 is 3, so 2 groups of 3.
    y6 = minibatch_stddev(torch.randn(6, 2, 2, 2), group_size=4)
    assert torch.equal(y6[0, 2], y6[2, 2]) and torch.equal(y6[0, 2], y6[4, 2])


def test_discriminator_gradients_reach_image_and_all_parameters(nets32):
    _, D = nets32
    D.zero_grad()
    img = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits, fts = D(img, condition(4))
    (logits.sum() + fts.square().sum()).backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert [n for n, p in D.named_parameters() if p.grad is None] == []
    D.zero_grad()


# ---------------------------------------------------------------------------------- precision


def test_mixed_precision_bf16_on_cpu_is_close_to_fp32():
    torch.manual_seed(0)
    cfg = small_cfg(32, num_fp16_res=2, conv_clamp=256.0)
    G, D = Generator(cfg, F_DIM), Discriminator(cfg, F_DIM)
    z, c = torch.randn(4, cfg.z_dim), condition(4)
    img32 = G(z, c, noise_mode="const")
    logits32, fts32 = D(img32, c)

    # The 2 highest resolutions (16, 32) run in bf16; lower ones stay fp32.
    dtypes = {}
    hooks = [
        block.conv1.register_forward_hook(lambda m, i, o, r=block.resolution: dtypes.update({r: o.dtype}))
        for block in G.synthesis_network.blocks
    ]
    G.set_mixed_precision(True)
    D.set_mixed_precision(True)
    img16 = G(z, c, noise_mode="const")
    for h in hooks:
        h.remove()
    logits16, fts16 = D(img32, c)
    assert dtypes == {4: torch.float32, 8: torch.float32, 16: torch.bfloat16, 32: torch.bfloat16}
    assert [b.use_autocast for b in D.blocks] == [True, True, False]  # D blocks at 32, 16, 8

    for out, ref in [(img16, img32), (logits16, logits32), (fts16, fts32)]:
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert (out - ref).norm() < 0.1 * ref.norm()
    assert not torch.equal(img16, img32)  # bf16 really ran

    G.set_mixed_precision(False)
    assert torch.equal(G(z, c, noise_mode="const"), img32)


# ---------------------------------------------------------------------------------- structure 1


def test_blocks_above_change_use_structure_1():
    G = Generator(small_cfg(64, change=16), F_DIM)
    kinds = {
        block.resolution: {type(m.style) for m in (block.conv0, block.conv1, block.torgb) if m is not None}
        for block in G.synthesis_network.blocks
    }
    assert kinds == {
        4: {ConditionalStyle},
        8: {ConditionalStyle},
        16: {ConditionalStyle},
        32: {ScaledStyle},
        64: {ScaledStyle},
    }


def test_structure_1_style_is_affine_w_times_scale_plus_bias():
    torch.manual_seed(0)
    style = ScaledStyle(F_DIM, 32, channels=8, lr_multiplier=0.01)
    w, c = torch.randn(3, 32), condition(3)
    lrelu = lambda x: F.leaky_relu(x, 0.2) * 2**0.5  # noqa: E731 (StyleGAN's gained leaky ReLU)

    def fc(layer, x, act):
        y = x @ (layer.weight * layer.weight_gain).T + layer.bias * layer.bias_gain
        return lrelu(y) if act else y

    def mlp(seq, x):
        return fc(seq[2], fc(seq[1], fc(seq[0], x, True), True), False)

    expected = fc(style.affine, w, False) * mlp(style.scale_mlp, c) + mlp(style.bias_mlp, c)
    torch.testing.assert_close(style(w, c), expected)
    assert [m.bias_gain for m in style.scale_mlp] == [0.01, 0.01, 1.0]  # first two layers slow
    assert [m.bias_gain for m in style.bias_mlp] == [0.01, 0.01, 1.0]
    assert [tuple(m.weight.shape) for m in style.scale_mlp] == [
        ((F_DIM + 32) // 2, F_DIM),
        (32, (F_DIM + 32) // 2),
        (8, 32),
    ]


def test_structure_1_parameters_all_get_gradients_and_the_condition_matters():
    torch.manual_seed(0)
    G = Generator(small_cfg(32, change=8), F_DIM)
    z = torch.randn(3, G.z_dim)
    img = G(z, condition(3), noise_mode="const")
    img.square().mean().backward()
    missing = [name for name, p in G.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    with torch.no_grad():
        assert not torch.allclose(G(z, condition(3), noise_mode="const"), img)


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [512, 1024])
def test_structure_1_resolutions_run_in_mixed_precision_and_survive_checkpoint_and_export(resolution, tmp_path):
    torch.manual_seed(0)
    cfg = small_cfg(resolution, channel_base=resolution * 4, channel_max=8, num_fp16_res=2, conv_clamp=256.0)
    G = Generator(cfg, F_DIM).eval()
    assert isinstance(G.synthesis_network.blocks[-1].conv1.style, ScaledStyle)  # default change = 256
    assert isinstance(G.synthesis_network.blocks[-3].conv1.style, ConditionalStyle)
    z, c = torch.randn(2, cfg.z_dim), condition(2)
    with torch.no_grad():
        img32 = G(z, c, noise_mode="const")
        G.set_mixed_precision(True)
        img16 = G(z, c, noise_mode="const")
        G.set_mixed_precision(False)
    assert img16.shape == (2, 3, resolution, resolution) and torch.isfinite(img16).all()
    assert not torch.equal(img16, img32) and (img16 - img32).norm() < 0.1 * img32.norm()

    state = {
        "config": ckpt.to_json_string({"network": to_dict(cfg)}),
        "encoder_identity": ckpt.to_json_string({"name": "lafite-tiny", "pretrained": None, "feature_dim": F_DIM}),
        "G_ema": ckpt.module_state(G),
    }
    checkpoint = ckpt.save_checkpoint(state, tmp_path, nimg=0)
    exported = export_generator(checkpoint, tmp_path / "g.safetensors")
    for source in (checkpoint, exported):
        loaded, info = load_generator(source)
        assert info["config"]["network"]["change"] == 256
        with torch.no_grad():
            torch.testing.assert_close(loaded(z, c, noise_mode="const"), img32, rtol=0, atol=0)
