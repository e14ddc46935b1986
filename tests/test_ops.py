"""StyleGAN2 building blocks: resampling, equalised-lr layers, modulated conv, precision helper."""

import math

import pytest
import torch
import torch.nn.functional as F

from lafite_core import ops, precision

FIR = ops.fir_filter()


def interior(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border]


def depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    c, k = x.shape[1], kernel.shape[-1]
    return F.conv2d(x, kernel[None, None].expand(c, 1, k, k), padding=k // 2, groups=c)


# ---------------------------------------------------------------------------------- resampling


def test_fir_filter_is_normalised_outer_product():
    f = ops.fir_filter()
    assert f.shape == (4, 4)
    assert torch.allclose(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)


def test_upsample_keeps_a_constant_image_constant():
    x = torch.full((2, 3, 8, 8), 0.7)
    y = ops.upsample2d(x, FIR)
    assert y.shape == (2, 3, 16, 16)
    assert torch.allclose(interior(y, 1), torch.full_like(interior(y, 1), 0.7))  # gain 4 is right
    assert y[0, 0, 0, 8] < 0.7  # the border sees zero padding, so this is a real check of the interior


def test_downsample_keeps_a_constant_image_constant_and_halves_size():
    y = ops.downsample2d(torch.full((1, 2, 16, 16), -1.5), FIR)
    assert y.shape == (1, 2, 8, 8)
    assert torch.allclose(interior(y, 1), torch.full_like(interior(y, 1), -1.5))


def test_downsample_of_upsample_is_the_expected_blur():
    # 1-D: zero insertion, [1,3,3,1]/8 (gain 2), [1,3,3,1]/8, keep even samples -> taps [3,10,3]/16.
    x = torch.randn(2, 3, 12, 12)
    y = ops.downsample2d(ops.upsample2d(x, FIR), FIR)
    k = torch.tensor([3.0, 10.0, 3.0]) / 16
    blur = depthwise(x, torch.outer(k, k))
    assert y.shape == x.shape
    assert torch.allclose(interior(y, 2), interior(blur, 2), atol=1e-5)
    assert not torch.allclose(interior(y, 2), interior(x, 2), atol=1e-2)


def test_fused_up_conv_matches_upsample_then_conv():
    x, w = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 3, 3)
    fused = ops.conv2d_up2(x, w, FIR)
    # Exact reference: pad the zero-inserted signal once, then filter and convolve 'valid'.
    exact = F.conv2d(ops.upfirdn2d(x, FIR, up=2, padding=(3, 2, 3, 2), gain=4.0), w.flip(2, 3))
    naive = F.conv2d(ops.upsample2d(x, FIR), w.flip(2, 3), padding=1)
    assert fused.shape == (2, 5, 16, 16)
    assert torch.allclose(fused, exact, atol=1e-5)
    assert torch.allclose(interior(fused, 1), interior(naive, 1), atol=1e-5)


def test_fused_down_conv_matches_conv_then_downsample():
    x, w = torch.randn(2, 3, 16, 16), torch.randn(4, 3, 3, 3)
    fused = ops.conv2d_down2(x, w, FIR)
    naive = ops.downsample2d(F.conv2d(x, w, padding=1), FIR)
    assert fused.shape == (2, 4, 8, 8)
    assert torch.allclose(interior(fused, 1), interior(naive, 1), atol=1e-5)


# ---------------------------------------------------------------------------------- activations


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's gained leaky ReLU, the reference the layers are checked against."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


def test_leaky_relu_gain_and_clamp():
    x = torch.tensor([-1.0, 0.0, 2.0, 100.0])
    s2 = math.sqrt(2)
    assert ops.activation_gain("lrelu") == s2 and ops.activation_gain("linear") == 1.0
    gained = x * ops.activation_gain("lrelu")  # the layers fold the gain in before activating
    assert torch.allclose(ops.activate(gained.clone(), "lrelu"), torch.tensor([-0.2 * s2, 0.0, 2 * s2, 100 * s2]))
    assert torch.allclose(ops.activate(gained.clone(), "lrelu", clamp=5.0), torch.tensor([-0.2 * s2, 0.0, 2 * s2, 5.0]))
    assert torch.equal(ops.activate(x.clone(), "linear"), x)


def test_conv_adds_bias_per_channel_times_gain_and_rejects_unknown_activation():
    conv = ops.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1.0, -2.0]))
    y = conv(torch.randn(1, 3, 3, 3), gain=3.0)
    assert torch.all(y[0, 0] == 3.0) and torch.all(y[0, 1] == -6.0)
    with pytest.raises(ValueError, match="activation"):
        ops.Conv2d(3, 2, 1, activation="gelu")
    with pytest.raises(ValueError, match="activation"):
        ops.FullyConnected(3, 2, activation="gelu")


# ---------------------------------------------------------------------------------- layers


def test_fully_connected_equalised_lr_and_bias_init():
    fc = ops.FullyConnected(8, 4, lr_multiplier=0.01, bias_init=1.0)
    x = torch.randn(3, 8)
    expected = x @ (fc.weight * 0.01 / math.sqrt(8)).t() + fc.bias * 0.01
    assert torch.allclose(fc(x), expected, atol=1e-6)
    assert torch.allclose(fc.bias * 0.01, torch.ones(4))  # effective initial bias = bias_init
    # Effective weights start ~N(0, 1/in) whatever the lr multiplier.
    big = ops.FullyConnected(256, 256, lr_multiplier=0.01)
    assert 0.8 < (big.weight * big.weight_gain).std().item() * math.sqrt(256) < 1.2


def test_fully_connected_lrelu():
    fc = ops.FullyConnected(5, 3, activation="lrelu")
    x = torch.randn(4, 5)
    linear = x @ (fc.weight / math.sqrt(5)).t()
    assert torch.allclose(fc(x), lrelu(linear), atol=1e-6)


def test_conv2d_shapes_gain_and_clamp():
    conv = ops.Conv2d(3, 6, 3, activation="lrelu", conv_clamp=0.5)
    x = torch.randn(2, 3, 8, 8)
    expected = lrelu(F.conv2d(x, conv.weight / math.sqrt(27), padding=1)).clamp(-0.5, 0.5)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    halved = conv(x, gain=0.5)  # gain scales the activation and the clamp together
    assert torch.allclose(halved, expected * 0.5, atol=1e-6)
    down = ops.Conv2d(3, 6, 3, down=2)
    assert down(x).shape == (2, 6, 4, 4)
    skip = ops.Conv2d(3, 6, 1, bias=False, down=2)
    assert torch.allclose(skip(x), F.conv2d(ops.downsample2d(x, FIR), skip.weight / math.sqrt(3)), atol=1e-6)


# ---------------------------------------------------------------------------------- modulated conv


def naive_modulated_conv(x, weight, styles, demodulate, up):
    """Materialise each sample's weight w[o,i,k] * s[i] (and demodulate it), convolve one by one."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xn = x[n : n + 1]
        if up == 2:
            outs.append(ops.conv2d_up2(xn, w, FIR))
        else:
            outs.append(F.conv2d(xn, w, padding=w.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_matches_per_sample_weights(demodulate, up):
    torch.manual_seed(0)
    x, weight = torch.randn(3, 4, 8, 8), torch.randn(5, 4, 3, 3)
    styles = torch.randn(3, 4) + 1
    out = ops.modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=FIR)
    ref = naive_modulated_conv(x, weight, styles, demodulate, up)
    assert out.shape == (3, 5, 8 * up, 8 * up)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_demodulation_makes_style_scale_irrelevant():
    x, weight, styles = torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3), torch.rand(2, 4) + 0.5
    a = ops.modulated_conv2d(x, weight, styles)
    b = ops.modulated_conv2d(x, weight * 7.0, styles * 0.01)
    assert torch.allclose(a, b, atol=1e-4)
    plain = ops.modulated_conv2d(x, weight, styles * 0.01, demodulate=False)
    assert not torch.allclose(a, plain, atol=1e-2)


def test_modulated_conv_checks_shapes():
    with pytest.raises(ValueError, match="disagree"):
        ops.modulated_conv2d(torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3), torch.randn(2, 5))


# ---------------------------------------------------------------------------------- precision


def test_autocast_dtype_by_device():
    assert precision.autocast_dtype("cpu") == torch.bfloat16
    assert precision.autocast_dtype("cuda") == torch.float16


def test_autocast_context_disabled_is_fp32_enabled_is_bf16_on_cpu():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.autocast("cpu", enabled=False):
        assert (a @ b).dtype == torch.float32
    with precision.autocast("cpu", enabled=True):
        assert (a @ b).dtype == torch.bfloat16
