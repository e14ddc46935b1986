"""Every LAFITE loss term in one place (paper Sec. 3.2, "Training objectives").

Generator:      L_G = L_adv(fake) + lambda_G * L_ConG + lambda_D * L_ConD(fake)      (paper Eq. 7)
Discriminator:  L_D = L_adv(real, fake) + lambda_D * L_ConD(real) + lazy R1           (paper Eq. 8)
plus StyleGAN2's path-length regulariser and style mixing on the generator side, and optionally
(`mode_seeking` > 0, not in LAFITE) the mode-seeking term of MSGAN (Mao et al. 2019), which makes
the latent matter: every other term rewards an image that matches its condition exactly, so
without it the generator can draw one image per condition and ignore z.

The condition `c` is the pseudo text feature h' of each real image in the batch (or a caption
feature); fakes are generated from the same conditions, so row i of every similarity matrix below
is a positive pair and the other rows of the batch are its negatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from lafite_core.compiled import compile_or_eager
from lafite_core.config import LossConfig

Tensor = torch.Tensor


def contrastive_loss(x: Tensor, y: Tensor, temperature: float, form: str = "infonce", lam: float = 0.0) -> Tensor:
    """Per-sample contrastive loss between matched rows of x and y (paper Eq. 5 and 6).

    sim_ij = cos(x_i, y_j). `lam` weighs the x->y direction (softmax over j) against the y->x
    direction (softmax over i); the official default lam = 0 keeps only y->x ("for each condition,
    find its image"). form="official" reproduces the authors' code, which applies the softmax to
    exp(sim / tau) instead of sim / tau and multiplies the probability by tau; their published
    hyper-parameters were tuned with it. Both forms return a loss to minimise.
    """
    if form not in ("infonce", "official"):
        raise ValueError(f"contrastive_form must be 'infonce' or 'official', got {form!r}")
    sim = F.cosine_similarity(x.unsqueeze(1), y.unsqueeze(0), dim=-1)
    if form == "infonce":
        logits = sim / temperature
        x_to_y = -torch.diagonal(F.log_softmax(logits, dim=1))
        y_to_x = -torch.diagonal(F.log_softmax(logits, dim=0))
    else:
        scores = torch.exp(sim / temperature)
        x_to_y = -torch.log(torch.diagonal(F.softmax(scores, dim=1)) * temperature)
        y_to_x = -torch.log(torch.diagonal(F.softmax(scores, dim=0)) * temperature)
    return lam * x_to_y + (1.0 - lam) * y_to_x


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating logistic loss: -log sigmoid(D(G(z)))."""
    return F.softplus(-fake_logits)


def discriminator_adversarial_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Logistic loss: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))."""
    return F.softplus(-real_logits) + F.softplus(fake_logits)


def mode_seeking_loss(
    fake_a: Tensor, fake_b: Tensor, z_a: Tensor, z_b: Tensor, view: int | None = None, eps: float = 1e-5
) -> Tensor:
    """MSGAN's term (Mao et al. 2019, Eq. 3) per sample: 1 / (|G(z_a, c) - G(z_b, c)| / |z_a - z_b| + eps),
    mean absolute differences; small when two latents give the same image for one condition.

    `view`: compare the images average-pooled to view x view pixels. At full resolution the cheapest
    way to differ is pixel noise; a coarse view counts only differences in layout and colour."""
    if view is not None and view < fake_a.shape[-1]:
        fake_a, fake_b = F.adaptive_avg_pool2d(fake_a, view), F.adaptive_avg_pool2d(fake_b, view)
    ratio = (fake_a - fake_b).abs().flatten(1).mean(1) / (z_a - z_b).abs().flatten(1).mean(1)
    return 1.0 / (ratio + eps)


def r1_penalty(real_images: Tensor, real_logits: Tensor) -> Tensor:
    """||grad_x D(x)||^2 per real sample (Mescheder et al. 2018); `real_images` must require grad."""
    (grads,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grads.square().sum(dim=[1, 2, 3])


def path_lengths(images: Tensor, ws: Tensor) -> Tensor:
    """StyleGAN2's |J_w^T y| for random image-space directions y, one length per sample."""
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    return grads.square().sum(dim=2).mean(dim=1).sqrt()


def white_canvas_view(images: Tensor, size: int) -> Tensor:
    """The authors' CLIP view of images smaller than CLIP's input: pasted, not resized, at one
    random offset (shared by the batch) into a white (value 1 in [-1, 1]) size x size canvas."""
    side = images.shape[-1]
    left, top = (int(torch.randint(0, size - side, [])) for _ in range(2))
    return F.pad(images, (left, size - side - left, top, size - side - top), value=1.0)


def mix_styles(mapping: Callable[..., Tensor], z: Tensor, ws: Tensor, prob: float) -> Tensor:
    """Style mixing: with probability `prob` the layers from a random cutoff on take the w of a
    second latent (one cutoff per batch, as in StyleGAN2)."""
    num_ws = ws.shape[1]
    if prob <= 0 or num_ws < 2 or torch.rand([]).item() >= prob:
        return ws
    cutoff = int(torch.randint(1, num_ws, []).item())
    other = mapping(torch.randn_like(z))
    return torch.cat([ws[:, :cutoff], other[:, cutoff:]], dim=1)


@dataclass
class Passes:
    """The network calls a phase makes: G's mapping and synthesis, and D."""

    mapping: Callable[..., Tensor]
    synthesis: Callable[..., Tensor]
    D: Callable[..., tuple[Tensor, Tensor]]


def compiled_passes(G, D, enabled: bool) -> Passes:
    """The main phases' passes, compiled when `enabled` (compile_or_eager falls back to eager)."""
    return Passes(
        compile_or_eager(G.mapping, enabled, "G.mapping"),
        compile_or_eager(G.synthesis, enabled, "G.synthesis"),
        compile_or_eager(D, enabled, "D"),
    )


class LafiteLoss:
    """The G and D phases of one LAFITE step; each method returns (loss to back-propagate, terms).

    Lazy regularisation (R1 every `r1_interval` D steps, path length every `pl_interval` G steps)
    multiplies the penalty by its interval, so the caller only decides *when* to run it.

    The main phases call `main` (compiled_passes; None: G and D themselves). R1 and path length
    always call G and D: they differentiate their graph twice, which compiled graphs cannot.
    """

    def __init__(self, G, D, encoder, cfg: LossConfig, main: Passes | None = None):
        self.G, self.D, self.encoder, self.cfg, self.main = G, D, encoder, cfg, main
        self.pl_mean = torch.zeros([])

    def _contrastive(self, x: Tensor, y: Tensor) -> Tensor:
        return contrastive_loss(x, y, self.cfg.temperature, self.cfg.contrastive_form, self.cfg.contrastive_lam)

    def _eager(self) -> Passes:
        return Passes(self.G.mapping, self.G.synthesis, self.D)

    def _main(self) -> Passes:
        return self.main or self._eager()

    def generate(
        self, z: Tensor, c: Tensor, update_w_avg: bool = False, passes: Passes | None = None
    ) -> tuple[Tensor, Tensor]:
        """(images, ws) through `passes`, by default the eager modules."""
        p = passes or self._eager()
        ws = p.mapping(z, update_w_avg=update_w_avg)
        ws = mix_styles(p.mapping, z, ws, self.cfg.style_mixing_prob)
        return p.synthesis(ws, c), ws

    def generator_main(self, z: Tensor, c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """L_adv(fake) + lambda_G * L_ConG + lambda_D * L_ConD(fake)."""
        main = self._main()
        fake, _ = self.generate(z, c, update_w_avg=True, passes=main)
        logits, fts = main.D(fake, c)
        terms = {"G_adv": generator_adversarial_loss(logits).mean()}
        if self.cfg.lambda_clip > 0:
            clip_fts = self.clip_features(fake)
            terms["G_con_clip"] = self._contrastive(clip_fts, c).mean()
        if self.cfg.lambda_disc > 0:
            terms["G_con_disc"] = self._contrastive(fts, c).mean()
        if self.cfg.mode_seeking > 0:
            terms["G_mode_seeking"] = self._mode_seeking(z, c, fake, main)
        total = (
            terms["G_adv"]
            + self.cfg.lambda_clip * terms.get("G_con_clip", 0.0)
            + self.cfg.lambda_disc * terms.get("G_con_disc", 0.0)
            + self.cfg.mode_seeking * terms.get("G_mode_seeking", 0.0)
        )
        return total, terms

    def _mode_seeking(self, z: Tensor, c: Tensor, fake: Tensor, passes: Passes) -> Tensor:
        """The first half of the batch drawn again from new latents, compared with its first draw."""
        n = max(1, z.shape[0] // 2)
        z_b = torch.randn_like(z[:n])
        fake_b, _ = self.generate(z_b, c[:n], passes=passes)
        return mode_seeking_loss(fake[:n], fake_b, z[:n], z_b, self.cfg.mode_seeking_view).mean()

    def clip_features(self, fake: Tensor) -> Tensor:
        """CLIP features of fakes in the training view: cfg.clip_view decides for small fakes."""
        size = self.encoder.image_size if self.cfg.clip_view == "official" else 0
        if fake.shape[-1] < size:
            return self.encoder.encode_image(white_canvas_view(fake, size))
        return self.encoder.encode_image(fake, augment=True)

    def generator_path_length(self, z: Tensor, c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Path-length regulariser on a shrunk batch, scaled by its lazy interval."""
        n = max(1, z.shape[0] // self.cfg.pl_batch_shrink)
        fake, ws = self.generate(z[:n], c[:n])
        lengths = path_lengths(fake, ws)
        self.pl_mean = self.pl_mean.to(lengths.device)
        pl_mean = self.pl_mean.lerp(lengths.mean().detach(), self.cfg.pl_decay)
        self.pl_mean = pl_mean
        penalty = (lengths - pl_mean).square().mean()
        return penalty * self.cfg.pl_weight * self.cfg.pl_interval, {"G_pl": penalty}

    def discriminator_main(self, real: Tensor, z: Tensor, c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """L_adv(real, fake) + lambda_D * L_ConD(real); the fakes are detached from G."""
        main = self._main()
        with torch.no_grad():
            fake, _ = self.generate(z, c, passes=main)
        fake_logits, _ = main.D(fake, c)
        real_logits, real_fts = main.D(real, c)
        terms = {"D_adv": discriminator_adversarial_loss(real_logits, fake_logits).mean()}
        if self.cfg.lambda_disc > 0:
            terms["D_con_disc"] = self._contrastive(real_fts, c).mean()
        total = terms["D_adv"] + self.cfg.lambda_disc * terms.get("D_con_disc", 0.0)
        terms["D_real_score"] = real_logits.detach().mean()
        terms["D_fake_score"] = fake_logits.detach().mean()
        return total, terms

    def discriminator_r1(self, real: Tensor, c: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Lazy R1: gamma/2 * E||grad D(x)||^2, scaled by its interval."""
        real = real.detach().requires_grad_(True)
        logits, _ = self.D(real, c)
        penalty = r1_penalty(real, logits).mean()
        return penalty * (self.cfg.r1_gamma / 2) * self.cfg.r1_interval, {"D_r1": penalty}
