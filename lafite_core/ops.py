"""StyleGAN2 building blocks in plain PyTorch: equalised-learning-rate layers, FIR resampling
and the modulated convolution.

Everything here is ordinary autograd code (no custom CUDA), so it runs wherever torch runs.
Conventions follow StyleGAN2 (Karras et al., 2020):
- weights are stored N(0, 1) and scaled at run time by 1/sqrt(fan_in) ("equalised learning rate"),
  so Adam's per-parameter step size means the same thing in every layer;
- resampling uses the separable [1, 3, 3, 1] low-pass filter, as in `upfirdn2d`;
- activations are leaky ReLU (slope 0.2) times sqrt(2), which keeps the second moment unchanged,
  optionally clamped to +-conv_clamp so that fp16 cannot overflow.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEFAULT_FILTER = (1.0, 3.0, 3.0, 1.0)
ACTIVATIONS = ("linear", "lrelu")


# --------------------------------------------------------------------------------------------
# Activation


def activation_gain(activation: str) -> float:
    """StyleGAN2's gain after `activation` (`def_gain`): sqrt(2) after leaky ReLU keeps the second
    moment of the activations unchanged."""
    return LRELU_GAIN if activation == "lrelu" else 1.0


def activate(x: torch.Tensor, activation: str, clamp: float | None = None) -> torch.Tensor:
    """The activation (and clamp) of a layer whose bias and gains are already inside its linear op.

    A positive gain commutes with leaky ReLU, lrelu(g * y) = g * lrelu(y), so a layer can scale its
    (small) weights and bias by the gain instead of scaling the (large) activation afterwards. The
    activation then runs in place: the tensor is a fresh output that nothing else holds.
    """
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE, inplace=True)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """oneDNN's convolutions run faster on NHWC; a no-op for tensors already in that layout."""
    return x.contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------------------------
# FIR filtering and resampling


def fir_filter(taps: Sequence[float] = DEFAULT_FILTER, device=None) -> torch.Tensor:
    """The separable 2-D low-pass filter outer(taps, taps), normalised to sum 1."""
    f = torch.as_tensor(taps, dtype=torch.float32, device=device)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter, downsample by striding (StyleGAN2's upfirdn2d).

    `padding` is (left, right, top, bottom) in upsampled pixels. Every channel is filtered with the
    same 2-D filter `f` (a depthwise convolution); `f` is symmetric here, so correlation equals
    convolution.
    """
    n, c, h, w = x.shape
    if up > 1:
        # Insert up-1 zeros after every sample along both axes.
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    weight = (f * gain).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    if len(set(padding)) == 1:  # the convolution pads by itself, without a padded copy of x
        return F.conv2d(x, weight, stride=down, padding=padding[0], groups=c)
    return F.conv2d(F.pad(x, list(padding)), weight, stride=down, groups=c)


def _resample_padding(filter_size: int, factor: int, up: bool) -> tuple[int, int, int, int]:
    """Padding that makes up/down-sampling by `factor` map H to H*factor (or H/factor), centred."""
    if up:
        p0, p1 = (filter_size + factor - 1) // 2, (filter_size - factor) // 2
    else:
        p0, p1 = (filter_size - factor + 1) // 2, (filter_size - factor) // 2
    return (p0, p1, p0, p1)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Upsample x2 with the low-pass filter; gain 4 keeps a constant image constant."""
    return upfirdn2d(x, f, up=2, padding=_resample_padding(f.shape[-1], 2, up=True), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Low-pass filter, then keep every second pixel (H -> H/2)."""
    return upfirdn2d(x, f, down=2, padding=_resample_padding(f.shape[-1], 2, up=False))


def conv2d_up2(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Up-sample x2 and apply a k x k convolution ('same' size), as one cheap op.

    Mathematically: insert zeros (x -> 2H), zero-pad once, then FIR low-pass (gain 4) and the
    convolution with the flipped kernel, both 'valid'. A stride-2 transposed convolution does the
    zero insertion and the convolution at the input resolution (4x cheaper than convolving the
    up-sampled image); the FIR filter then finishes the low-pass. This is how StyleGAN2 does it
    (the kernel flip is only a parametrisation detail: the kernel is learned). Away from a 1-pixel
    border it equals `F.conv2d(upsample2d(x, f), weight.flip(2, 3), padding=k // 2)`.
    """
    k, fw = weight.shape[-1], f.shape[-1]
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    # The transposed conv padded the zero-inserted signal by (k-1, k-2); the FIR gets the rest of
    # upsample2d's padding plus the conv's k//2.
    p0 = (fw + 1) // 2 + k // 2 - (k - 1)
    p1 = (fw - 2) // 2 + k // 2 - (k - 2)
    return upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=4.0)


def conv2d_down2(
    x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """A k x k convolution followed by down-sampling x2, computed as FIR + stride-2 conv.

    Filtering first lets the convolution run only at the output pixels (as in StyleGAN2). Away
    from a 1-pixel border it equals `downsample2d(F.conv2d(x, weight, padding=k // 2), f)`.
    """
    k, fw = weight.shape[-1], f.shape[-1]
    p0 = (fw - 1) // 2 + k // 2
    p1 = (fw - 2) // 2 + k // 2
    x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
    return F.conv2d(x, weight, bias, stride=2)


# --------------------------------------------------------------------------------------------
# Equalised-learning-rate layers


class FullyConnected(nn.Module):
    """Linear layer with equalised learning rate and an optional learning-rate multiplier.

    Stored weights are N(0, 1/lr_mult^2) and scaled by lr_mult/sqrt(in_features) at run time, so
    the effective weight starts N(0, 1/in_features) while Adam moves it lr_mult times slower (the
    mapping network uses lr_mult = 0.01). `bias_init` is the effective initial bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = activation_gain(self.activation)
        b = None if self.bias is None else self.bias.to(x.dtype) * (self.bias_gain * gain)
        w, scale = self.weight.to(x.dtype), self.weight_gain * gain
        # The weight gain goes on whichever operand is smaller: (x g) W^T = x (g W)^T.
        if x.numel() < w.numel():
            x = x * scale
        else:
            w = w * scale
        return activate(F.linear(x, w, b), self.activation)

    def extra_repr(self) -> str:
        out_f, in_f = self.weight.shape
        return f"{in_f} -> {out_f}, activation={self.activation}, lr_mult={self.bias_gain:g}"


class Conv2d(nn.Module):
    """Conv layer with equalised learning rate, optional FIR down-sampling x2 and output clamp.

    `forward(x, gain)` multiplies the activation by `gain` (and the clamp with it), which the
    residual discriminator uses to scale both branches by sqrt(1/2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: int = 1,
        conv_clamp: float | None = None,
        resample_filter: Sequence[float] = DEFAULT_FILTER,
    ):
        super().__init__()
        if down not in (1, 2):
            raise ValueError(f"down must be 1 or 2, got {down}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("resample_filter", fir_filter(resample_filter), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        gain_total = gain * activation_gain(self.activation)
        w = (self.weight * (self.weight_gain * gain_total)).to(x.dtype)
        b = None if self.bias is None else (self.bias * gain_total).to(x.dtype)
        k = w.shape[-1]
        x = channels_last(x)
        if self.down == 1:
            x = F.conv2d(x, w, b, padding=k // 2)
        elif k == 1:
            # A 1x1 conv commutes with the filter: downsample first, convolve 4x fewer pixels.
            x = F.conv2d(downsample2d(x, self.resample_filter), w, b)
        else:
            x = conv2d_down2(x, w, self.resample_filter, b)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return activate(x, self.activation, clamp)


# --------------------------------------------------------------------------------------------
# Modulated convolution


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """d[n, o] = 1 / sqrt(sum_{i,k} (w[o, i, k] * s[n, i])^2 + eps)  (StyleGAN2, eq. 3).

    Computed as (s^2) @ (sum_k w^2)^T, so no per-sample weight tensor is ever built.
    """
    w_sq = weight.float().square().sum(dim=[2, 3])  # [O, I]
    return (styles.float().square() @ w_sq.t() + eps).rsqrt()  # [N, O]


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    gain: float = 1.0,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution (eqs. 1-3) with 'same' padding, optionally up-sampling x2,
    plus the layer's bias and noise, all times `gain`:

        out = gain * (conv(x, w'_n) + bias + noise),  w'_n[o,i,k] = w[o,i,k] * s[n,i] * d[n,o]

    computed by scaling activations instead of building w'_n: conv(x, w'_n) = d[n, o] *
    conv(x * s[n, :], w), so every sample shares one weight tensor and one batched convolution on
    channels-last activations. StyleGAN2's other form, one grouped convolution with each sample's
    own weight, measured slower on CPU at every size from 32 to 256 px, even for a single image.
    Bias, noise and gain are taken here so they cost one pass over the output, not three.

    x: [N, I, H, W]; weight: [O, I, k, k]; styles: [N, I]; noise broadcasts to [N, 1, H*up, W*up].
    """
    n, in_channels = styles.shape
    if x.shape[:2] != (n, in_channels) or weight.shape[1] != in_channels:
        raise ValueError(
            f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
            f"{tuple(styles.shape)} disagree on batch or input channels"
        )
    if up not in (1, 2):
        raise ValueError(f"up must be 1 or 2, got {up}")
    if up == 2 and resample_filter is None:
        raise ValueError("modulated_conv2d with up=2 needs a resample_filter")
    if demodulate and x.dtype == torch.float16:
        # Scale-invariant pre-normalisation (the result is unchanged): keeps x * s and the conv
        # output in fp16's range.
        weight = weight * (weight.abs().amax(dim=[1, 2, 3], keepdim=True) * math.sqrt(weight[0].numel())).reciprocal()
        styles = styles / styles.abs().amax(dim=1, keepdim=True)
    x = channels_last(x * styles.to(x.dtype).reshape(n, in_channels, 1, 1))
    w = weight.to(x.dtype)
    y = F.conv2d(x, w, padding=w.shape[-1] // 2) if up == 1 else conv2d_up2(x, w, resample_filter)
    addend, noise = _constant_addend(bias, noise, gain, y)
    if demodulate:
        scale = (demodulation_coefficients(weight, styles) * gain).to(y.dtype).reshape(n, -1, 1, 1)
        y = y * scale if addend is None else torch.addcmul(addend, y, scale)
    elif addend is not None:
        y = torch.add(addend, y, alpha=gain)
    elif gain != 1:
        y = y * gain
    return y if noise is None else y.add_((noise * gain).to(y.dtype))


def _constant_addend(bias, noise, gain, like):
    """gain * (bias + noise) as one small tensor where noise is the same for every sample, so the
    large activation is passed over once; per-sample noise is returned to be added on its own."""
    addend = None if bias is None else bias.reshape(1, -1, 1, 1)
    if noise is not None and noise.shape[0] == 1:
        addend = noise if addend is None else addend + noise
        noise = None
    if addend is None:
        return None, noise
    addend = (addend * gain).to(like.dtype)
    if like.is_contiguous(memory_format=torch.channels_last):
        addend = channels_last(addend)  # a broadcast across two layouts is several times slower
    return addend, noise
