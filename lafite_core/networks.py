"""LAFITE's conditional StyleGAN2: generator G(z, h') and projection discriminator D(x, h').

h' (called `c` here) is the condition: a CLIP text feature, or during language-free training a
pseudo text feature made from a CLIP image feature. Its size f is a constructor argument.

Generator (StyleGAN2 "skip" architecture, Karras et al. 2020, with LAFITE's conditional styles):
  z -> mapping network -> w (the condition does NOT enter the mapping network);
  every modulated conv and toRGB layer computes its own style from w and c, so the text condition
  can steer every layer separately. Blocks up to `cfg.change` px use LAFITE's "structure 2",
      style = affine(concat[MLP(c), w]),  MLP: f -> (f + w_dim)/2 -> w_dim (leaky ReLU);
  blocks above it use "structure 1", a condition-dependent scale and bias of the usual w style,
      style = affine(w) * scale(c) + bias(c),  scale, bias: f -> (f + w_dim)/2 -> w_dim -> channels.

Discriminator (StyleGAN2 residual D): blocks down to 4x4, then an epilogue with minibatch-stddev,
a conv and an fc layer feeding two heads: `out` (a scalar) and `fts` (an f-dimensional feature used
by the contrastive loss L_ConD). The conditional logit is the projection
      logit_n = out(x_n) + <fts(x_n), c_n>
computed per sample (the official code sums the inner product over the batch, a bug). As in the
official code's default (`d_use_norm=False`), fts is not normalised inside the logit; the
contrastive loss normalises it itself.

Mixed precision: `set_mixed_precision(True)` runs the `cfg.num_fp16_res` highest-resolution blocks
under autocast (fp16 on CUDA, bf16 on CPU; see precision.py). Outputs are always fp32. Activations
are clamped to +-cfg.conv_clamp in every conv layer whenever conv_clamp is set (as the official
code does), so that fp16 cannot overflow.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lafite_core import precision
from lafite_core.config import MAX_RESOLUTION, MIN_RESOLUTION, NetworkConfig
from lafite_core.ops import (
    LRELU_GAIN,
    Conv2d,
    FullyConnected,
    activate,
    fir_filter,
    modulated_conv2d,
    upsample2d,
)

NOISE_MODES = ("random", "const", "none")


def check_resolution(resolution: int) -> None:
    """Accept powers of two from 32 to 1024; anything else is a ValueError naming `resolution`."""
    is_pow2 = isinstance(resolution, int) and resolution > 0 and resolution & (resolution - 1) == 0
    if not (is_pow2 and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise ValueError(
            f"resolution must be a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION}, got {resolution!r}"
        )


def channels_at(resolution: int, cfg: NetworkConfig) -> int:
    """Feature maps at a resolution: min(channel_base // res, channel_max), as in StyleGAN2."""
    return min(cfg.channel_base // resolution, cfg.channel_max)


def mixed_precision_resolution(cfg: NetworkConfig) -> int:
    """Blocks at this resolution and above are the `num_fp16_res` highest ones (never 4x4)."""
    log2 = int(math.log2(cfg.resolution))
    return max(2 ** (log2 + 1 - cfg.num_fp16_res), 8)


def resolve_feature_dim(cfg: NetworkConfig, feature_dim: int) -> int:
    """The condition size f comes from the encoder; a value in the config must agree with it."""
    if cfg.feature_dim is not None and cfg.feature_dim != feature_dim:
        raise ValueError(f"feature_dim mismatch: config says {cfg.feature_dim}, the encoder gives {feature_dim}")
    if feature_dim <= 0:
        raise ValueError(f"feature_dim must be positive, got {feature_dim}")
    return feature_dim


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit mean square (StyleGAN's 'pixel norm' of z)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def _check_condition(c: torch.Tensor, batch: int, feature_dim: int) -> None:
    if c.shape != (batch, feature_dim):
        raise ValueError(f"condition c must have shape [{batch}, {feature_dim}], got {list(c.shape)}")


class MixedPrecisionBlock(nn.Module):
    """A block that may run under autocast; the owning network decides which blocks do."""

    def __init__(self):
        super().__init__()
        self.use_autocast = False
        self.autocast_dtype: torch.dtype | None = None  # None: precision.autocast_dtype(device)

    def autocast(self, device: torch.device):
        return precision.autocast(device, self.use_autocast, self.autocast_dtype)


def _set_mixed_precision(blocks: list[MixedPrecisionBlock], enabled: bool, dtype: torch.dtype | None) -> None:
    for block in blocks:
        block.use_autocast = enabled
        block.autocast_dtype = dtype


# --------------------------------------------------------------------------------------------
# Generator


class MappingNetwork(nn.Module):
    """z -> w: pixel-norm, then `num_layers` leaky-ReLU FC layers with a small lr multiplier.

    Keeps `w_avg`, a running mean of w (EMA with `w_avg_beta`), the centre for truncation.
    """

    def __init__(
        self, z_dim: int, w_dim: int, num_ws: int, num_layers: int, lr_multiplier: float, w_avg_beta: float = 0.995
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"mapping_layers must be at least 1, got {num_layers}")
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(
            *[
                FullyConnected(dims[i], dims[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
                for i in range(num_layers)
            ]
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        """Returns ws [N, num_ws, w_dim]; psi < 1 pulls the first `truncation_cutoff` ws (all if
        None) towards w_avg: w' = w_avg + psi * (w - w_avg)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        w = self.layers(normalize_2nd_moment(z.float()))
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)  # a copy: callers may edit it (style mixing)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = torch.cat([self.w_avg.lerp(ws[:, :cutoff], truncation_psi), ws[:, cutoff:]], dim=1)
        return ws


def condition_mlp(feature_dim: int, w_dim: int, lr_multiplier: float) -> list[nn.Module]:
    """f -> (f + w_dim)/2 -> w_dim, leaky ReLU, slow learning rate: the condition into w-space."""
    hidden = (feature_dim + w_dim) // 2
    return [
        FullyConnected(feature_dim, hidden, activation="lrelu", lr_multiplier=lr_multiplier),
        FullyConnected(hidden, w_dim, activation="lrelu", lr_multiplier=lr_multiplier),
    ]


class ConditionalStyle(nn.Module):
    """LAFITE 'structure 2': style = affine(concat[MLP(c), w]), one instance per layer.

    The MLP (`condition_mlp`) maps the CLIP-space condition into w-space; the affine starts with
    bias 1 so that initial styles are ~1.
    """

    def __init__(self, feature_dim: int, w_dim: int, channels: int, lr_multiplier: float):
        super().__init__()
        self.condition_mlp = nn.Sequential(*condition_mlp(feature_dim, w_dim, lr_multiplier))
        self.affine = FullyConnected(2 * w_dim, channels, bias_init=1.0)

    def forward(self, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.affine(torch.cat([self.condition_mlp(c), w], dim=1))


class ScaledStyle(nn.Module):
    """LAFITE 'structure 1': style = affine(w) * scale(c) + bias(c), one instance per layer.

    scale and bias are each `condition_mlp` followed by a linear layer to the channels at the
    normal learning rate (bias 0). The condition modulates the w style instead of joining it,
    which costs two MLPs per layer; the authors use it only above `change` px.
    """

    def __init__(self, feature_dim: int, w_dim: int, channels: int, lr_multiplier: float):
        super().__init__()
        self.affine = FullyConnected(w_dim, channels, bias_init=1.0)
        self.scale_mlp = nn.Sequential(
            *condition_mlp(feature_dim, w_dim, lr_multiplier), FullyConnected(w_dim, channels)
        )
        self.bias_mlp = nn.Sequential(
            *condition_mlp(feature_dim, w_dim, lr_multiplier), FullyConnected(w_dim, channels)
        )

    def forward(self, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.affine(w) * self.scale_mlp(c) + self.bias_mlp(c)


def conditional_style(resolution: int, feature_dim: int, channels: int, cfg: NetworkConfig) -> nn.Module:
    """The style module of a layer in a block of `resolution` px: structure 2 up to cfg.change."""
    kind = ConditionalStyle if resolution <= cfg.change else ScaledStyle
    return kind(feature_dim, cfg.w_dim, channels, cfg.condition_lr_mult)


class SynthesisLayer(nn.Module):
    """Modulated + demodulated 3x3 conv (optionally up-sampling x2), noise, bias, leaky ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, resolution: int, up: int, feature_dim: int, cfg: NetworkConfig
    ):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, cfg.conv_clamp
        self.style = conditional_style(resolution, feature_dim, in_channels, cfg)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, c: torch.Tensor, noise_mode: str) -> torch.Tensor:
        styles = self.style(w, c)
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            up=self.up,
            resample_filter=self.resample_filter,
            bias=self.bias,
            noise=self.noise(x.shape[0], noise_mode, x.device),
            gain=LRELU_GAIN,
        )
        return activate(x, "lrelu", clamp=self.conv_clamp)

    def noise(self, batch: int, noise_mode: str, device: torch.device) -> torch.Tensor | None:
        """Per-pixel noise times its learned strength: [N, 1, R, R] random, [1, 1, R, R] const."""
        if noise_mode == "random":
            return torch.randn(batch, 1, self.resolution, self.resolution, device=device) * self.noise_strength
        if noise_mode == "const":
            return (self.noise_const * self.noise_strength).reshape(1, 1, self.resolution, self.resolution)
        return None


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, not demodulated (StyleGAN2 skip generator)."""

    def __init__(self, in_channels: int, img_channels: int, resolution: int, feature_dim: int, cfg: NetworkConfig):
        super().__init__()
        self.conv_clamp = cfg.conv_clamp
        self.style = conditional_style(resolution, feature_dim, in_channels, cfg)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        styles = self.style(w, c) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, bias=self.bias)
        return activate(x, "linear", clamp=self.conv_clamp)


class SynthesisBlock(MixedPrecisionBlock):
    """One resolution: [const 4x4 | up-sampling conv], conv, toRGB added to the up-sampled image."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, feature_dim: int, cfg: NetworkConfig):
        super().__init__()
        self.resolution = resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, resolution, 2, feature_dim, cfg)
        self.conv1 = SynthesisLayer(out_channels, out_channels, resolution, 1, feature_dim, cfg)
        self.torgb = ToRGB(out_channels, cfg.img_channels, resolution, feature_dim, cfg)
        self.num_conv = 1 if in_channels == 0 else 2
        self.register_buffer("resample_filter", fir_filter(), persistent=False)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, c: torch.Tensor, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ws: [N, num_conv + 1, w_dim] (the last one drives toRGB). img stays fp32."""
        w_iter = iter(ws.unbind(dim=1))
        with self.autocast(ws.device):
            if self.const is not None:
                x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            else:
                x = x if self.use_autocast else x.float()
                x = self.conv0(x, next(w_iter), c, noise_mode)
            x = self.conv1(x, next(w_iter), c, noise_mode)
            y = self.torgb(x, next(w_iter), c).float()
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws + condition -> image, through blocks at 4, 8, ..., resolution (skip architecture)."""

    def __init__(self, feature_dim: int, cfg: NetworkConfig):
        super().__init__()
        check_resolution(cfg.resolution)
        self.resolutions = [2**i for i in range(2, int(math.log2(cfg.resolution)) + 1)]
        self.blocks = nn.ModuleList()
        for res in self.resolutions:
            in_ch = 0 if res == 4 else channels_at(res // 2, cfg)
            self.blocks.append(SynthesisBlock(in_ch, channels_at(res, cfg), res, feature_dim, cfg))
        # Each block's toRGB shares its w with the next block's first conv (as in StyleGAN2).
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: torch.Tensor, c: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        ws, c = ws.float(), c.float()
        x = img = None
        w_idx = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + 1], c, noise_mode)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """LAFITE generator: G(z, c) = synthesis(mapping(z), c). See the module docstring."""

    def __init__(self, cfg: NetworkConfig, feature_dim: int):
        super().__init__()
        self.cfg = cfg
        self.feature_dim = resolve_feature_dim(cfg, feature_dim)
        self.z_dim, self.w_dim, self.resolution = cfg.z_dim, cfg.w_dim, cfg.resolution
        self.synthesis_network = SynthesisNetwork(self.feature_dim, cfg)
        self.num_ws = self.synthesis_network.num_ws
        self.mapping_network = MappingNetwork(
            cfg.z_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers, cfg.mapping_lr_mult
        )

    def mapping(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool = False,
    ) -> torch.Tensor:
        """z [N, z_dim] -> ws [N, num_ws, w_dim]; see MappingNetwork.forward."""
        return self.mapping_network(z, truncation_psi, truncation_cutoff, update_w_avg)

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """ws [N, num_ws, w_dim] + condition c [N, f] -> image [N, img_channels, R, R] (fp32)."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        _check_condition(c, ws.shape[0], self.feature_dim)
        return self.synthesis_network(ws, c, noise_mode)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
    ) -> torch.Tensor:
        ws = self.mapping(z, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, c, noise_mode)

    def set_mixed_precision(self, enabled: bool, dtype: torch.dtype | None = None) -> None:
        """Run the cfg.num_fp16_res highest-resolution blocks under autocast (dtype: default by device)."""
        first = mixed_precision_resolution(self.cfg)
        _set_mixed_precision([b for b in self.synthesis_network.blocks if b.resolution >= first], enabled, dtype)


# --------------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(MixedPrecisionBlock):
    """Residual block: [fromRGB], conv 3x3, conv 3x3 with FIR down-sampling, plus a 1x1 skip.

    Both branches are scaled by sqrt(1/2) so the sum keeps unit variance.
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, cfg: NetworkConfig):
        super().__init__()
        self.resolution = resolution
        clamp = cfg.conv_clamp
        self.fromrgb = (
            Conv2d(cfg.img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=clamp)
            if in_channels == 0
            else None
        )
        self.conv0 = Conv2d(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=clamp)
        self.conv1 = Conv2d(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=clamp)
        self.skip = Conv2d(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = math.sqrt(0.5)
        with self.autocast(x.device):
            if not self.use_autocast:
                x = x.float()
            if self.fromrgb is not None:
                x = self.fromrgb(x)
            y = self.skip(x, gain=gain)
            x = self.conv1(self.conv0(x), gain=gain)
            return y + x


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one channel: the stddev over a group of samples, averaged over channels and pixels.

    Lets D see the diversity of a batch (Karras et al. 2018). Groups are samples i, i+n, i+2n, ...
    The group is the largest divisor of the batch size that is <= `group_size`, so any batch works
    (a batch of 1, or a prime batch, gets groups of 1: the stddev channel is then ~0).
    """
    n, ch, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.float().reshape(g, n // g, ch, h, w)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [n/g, C, H, W]
    y = y.mean(dim=[1, 2, 3]).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # [N, 1, H, W]
    return torch.cat([x, y.to(x.dtype)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch-stddev, conv, fc, then `out` (logit) and `fts` (feature for L_ConD)."""

    def __init__(self, channels: int, feature_dim: int, cfg: NetworkConfig):
        super().__init__()
        self.mbstd_group_size = cfg.mbstd_group_size
        self.conv = Conv2d(channels + 1, channels, 3, activation="lrelu", conv_clamp=cfg.conv_clamp)
        self.fc = FullyConnected(channels * 4 * 4, channels, activation="lrelu")
        self.out = FullyConnected(channels, 1)
        self.fts = FullyConnected(channels, feature_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = minibatch_stddev(x.float(), self.mbstd_group_size)
        h = self.fc(self.conv(x).flatten(1))
        fts = self.fts(h)
        logits = self.out(h).squeeze(1) + (fts * c).sum(dim=1)  # projection, per sample
        return logits, fts


class Discriminator(nn.Module):
    """LAFITE projection discriminator: D(img, c) -> (logits [N], fts [N, f])."""

    def __init__(self, cfg: NetworkConfig, feature_dim: int):
        super().__init__()
        check_resolution(cfg.resolution)
        if cfg.mbstd_group_size < 1:
            raise ValueError(f"mbstd_group_size must be at least 1, got {cfg.mbstd_group_size}")
        self.cfg = cfg
        self.feature_dim = resolve_feature_dim(cfg, feature_dim)
        self.resolution = cfg.resolution
        self.blocks = nn.ModuleList()
        res = cfg.resolution
        while res > 4:
            tmp = channels_at(res, cfg)
            in_ch = 0 if res == cfg.resolution else tmp
            self.blocks.append(DiscriminatorBlock(in_ch, tmp, channels_at(res // 2, cfg), res, cfg))
            res //= 2
        self.epilogue = DiscriminatorEpilogue(channels_at(4, cfg), self.feature_dim, cfg)

    def forward(self, img: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        expected = (self.cfg.img_channels, self.resolution, self.resolution)
        if img.ndim != 4 or img.shape[1:] != expected:
            raise ValueError(f"img must have shape [N, {', '.join(map(str, expected))}], got {list(img.shape)}")
        _check_condition(c, img.shape[0], self.feature_dim)
        x = img
        for block in self.blocks:
            x = block(x)
        return self.epilogue(x, c.float())

    def set_mixed_precision(self, enabled: bool, dtype: torch.dtype | None = None) -> None:
        """Run the cfg.num_fp16_res highest-resolution blocks under autocast (dtype: default by device)."""
        first = mixed_precision_resolution(self.cfg)
        _set_mixed_precision([b for b in self.blocks if b.resolution >= first], enabled, dtype)
