"""Pseudo text features: how LAFITE turns a CLIP *image* feature into a stand-in for a *text* feature.

CLIP puts a matching image and caption close but not on top of each other (cosine about 0.3), so
a generator trained on raw image features would meet an unfamiliar region at inference, when it is
given text features. Perturbing the image feature fills that gap. With h~ = h/||h|| and
eps ~ N(0, I), the kinds (pick one by name in `PerturbationConfig.kind`) are:

- none:     h' = h~                                                   (ablation baseline)
- gaussian: h' = norm(h~ + xi * eps * ||h~|| / ||eps||)               (paper, Sec. 3.2)
- official: h' = norm((1 - a) h~ + a * eps / ||eps||)                 (authors' code; a = image_alpha)
- learned:  r = mu(h~) + exp(logstd(h~)) * eps,
            h' = norm(h~ + r * ||h~|| / ||r||)                        (paper's adaptive variant)
- calibrated: gaussian with xi = sqrt(1/c^2 - 1), c the encoder's matched image/caption cosine,
            so h' sits as far from h~ as a real caption does            (modality.py measures c)
- centred:  h_c = norm(h~ - image_mean + text_mean), then calibrated noise around h_c, sized by
            the matched cosine left after the shift                    (C3, Zhang et al. 2024)

calibrated and centred take `min_target_cosine`: each sample then draws its own target cosine
between it and the usual one, so the pseudo features cover both full captions (close to their
images) and short prompts (further away, since they name less).

For unit vectors "official" is "gaussian" with xi = a / (1 - a), so a = 0.75 is xi = 3 and
E[cos(h', h~)] is about 1/sqrt(1 + xi^2) = 0.32 in high dimension.

`kind` decides how image features become pseudo text features. Caption features (source="text",
the standard and mixed settings) get the official small perturbation under every kind but none:
the interpolation above with a = text_alpha (0.1; 0 turns it off).

Every sample gets its own eps, as in the authors' code (`torch.randn(txt_fts.shape)`). All outputs
are L2-normalised.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from lafite_core.assets import resolve_asset
from lafite_core.config import PerturbationConfig
from lafite_core.modality import ModalityGeometry, centre, load_geometry, noise_ratio
from lafite_core.progress import tqdm
from lafite_core.registry import Registry
from lafite_core.tensor_files import judge_weights_file, refusal_reason

PERTURBATIONS: Registry = Registry("perturbation")
SOURCES = ("image", "text")


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)


def random_like(draw, shape: tuple[int, ...], h: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """`draw` (torch.randn, torch.rand) of `shape`, drawn on the generator's device (so a CPU generator
    reproduces CUDA runs), then moved to h's device and dtype."""
    device = generator.device if generator is not None else h.device
    return draw(shape, generator=generator, device=device).to(device=h.device, dtype=h.dtype)


def gaussian_noise(h: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """eps ~ N(0, I) shaped like h [N, f], one draw per row."""
    return random_like(torch.randn, h.shape, h, generator)


def gaussian_perturb(h_unit: Tensor, xi: float, eps: Tensor) -> Tensor:
    """Paper form: norm(h~ + xi * eps * ||h~|| / ||eps||)."""
    return _unit(h_unit + xi * _unit(eps) * h_unit.norm(dim=-1, keepdim=True))


def interpolate_perturb(h_unit: Tensor, alpha: float, eps: Tensor) -> Tensor:
    """Official-code form: norm((1 - a) h~ + a * eps / ||eps||)."""
    return _unit((1 - alpha) * h_unit + alpha * _unit(eps))


class Perturbation(nn.Module):
    """Maps CLIP features [N, f] (any norm) to unit-norm pseudo text features [N, f].

    Subclasses define `perturb_image`; caption features get the small official interpolation.
    """

    def __init__(self, text_alpha: float = 0.1):
        super().__init__()
        self.text_alpha = text_alpha

    def forward(self, h: Tensor, source: str = "image", generator: torch.Generator | None = None) -> Tensor:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if h.ndim != 2:
            raise ValueError(f"expected features [N, f], got shape {tuple(h.shape)}")
        h_unit = _unit(h)
        if source == "text":
            return self.perturb_text(h_unit, generator)
        return self.perturb_image(h_unit, generator)

    def noise(self, h: Tensor, generator: torch.Generator | None) -> Tensor:
        return gaussian_noise(h, generator)

    def perturb_text(self, h_unit: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.text_alpha == 0:
            return h_unit
        return interpolate_perturb(h_unit, self.text_alpha, self.noise(h_unit, generator))

    def perturb_image(self, h_unit: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError


class NoPerturbation(Perturbation):
    """h' = h~ for images and captions: shows what the perturbation buys."""

    def perturb_text(self, h_unit: Tensor, generator: torch.Generator | None) -> Tensor:
        return h_unit

    def perturb_image(self, h_unit: Tensor, generator: torch.Generator | None) -> Tensor:
        return h_unit


class GaussianPerturbation(Perturbation):
    """Paper form with noise-to-signal ratio xi; with `cosine_range` (low, high), each sample draws its
    own E[cos(h', h~)] uniformly in that range and uses the xi that gives it."""

    def __init__(self, xi: float, text_alpha: float = 0.1, cosine_range: tuple[float, float] | None = None):
        super().__init__(text_alpha)
        self.xi = xi
        self.cosine_range = cosine_range

    def perturb_image(self, h_unit: Tensor, generator: torch.Generator | None) -> Tensor:
        return gaussian_perturb(h_unit, self.sample_xi(h_unit, generator), self.noise(h_unit, generator))

    def sample_xi(self, h_unit: Tensor, generator: torch.Generator | None) -> float | Tensor:
        """xi, or [N, 1] ratios of cosines drawn per sample from cosine_range."""
        if self.cosine_range is None:
            return self.xi
        low, high = self.cosine_range
        cosine = low + (high - low) * random_like(torch.rand, (len(h_unit), 1), h_unit, generator)
        return (1 / cosine.square() - 1).sqrt()


class OfficialPerturbation(Perturbation):
    """Authors' interpolation with weight image_alpha (0.75) for image features."""

    def __init__(self, image_alpha: float, text_alpha: float = 0.1):
        super().__init__(text_alpha)
        self.image_alpha = image_alpha

    def perturb_image(self, h_unit: Tensor, generator: torch.Generator | None) -> Tensor:
        return interpolate_perturb(h_unit, self.image_alpha, self.noise(h_unit, generator))


class CentredPerturbation(GaussianPerturbation):
    """Cross the modality gap by its mean offset, then add noise: isotropic noise alone cannot
    cross a constant offset between the two modalities' cones."""

    def __init__(
        self,
        geometry: ModalityGeometry,
        xi: float,
        text_alpha: float = 0.1,
        cosine_range: tuple[float, float] | None = None,
    ):
        super().__init__(xi, text_alpha, cosine_range)
        self.register_buffer("image_mean", geometry.image_mean.clone())
        self.register_buffer("text_mean", geometry.text_mean.clone())

    def perturb_image(self, h_unit: Tensor, generator: torch.Generator | None) -> Tensor:
        return super().perturb_image(centre(h_unit, self.image_mean, self.text_mean), generator)


def _mlp(feature_dim: int, hidden_dim: int) -> nn.Sequential:
    """f -> hidden -> hidden -> hidden -> f with leaky ReLU, the official inference net's shape."""
    return nn.Sequential(
        nn.Linear(feature_dim, hidden_dim),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_dim, hidden_dim),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_dim, hidden_dim),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_dim, feature_dim),
    )


class LearnedPerturbation(Perturbation):
    """Adaptive noise: r = mu(h~) + exp(logstd(h~)) * eps, h' = norm(h~ + r * ||h~|| / ||r||).

    The official code adds the network's output as a residual, h~ + g(h~), so its size is learned
    too. Here r is rescaled to ||h~||: the network chooses only the *direction* of the offset
    (mu can tilt it towards or away from h~, so cos(h', h~) still spans [0, 1]), and the spread of
    that direction comes from exp(logstd) relative to mu. Train it with
    `train_learned_perturbation`; see `learned_perturbation_loss` for the objective.
    """

    def __init__(self, feature_dim: int, hidden_dim: int = 1024, text_alpha: float = 0.1):
        super().__init__(text_alpha)
        self.feature_dim = feature_dim
        self.hidden_dim = hidden_dim
        self.mu = _mlp(feature_dim, hidden_dim)
        self.log_std = _mlp(feature_dim, hidden_dim)

    def sample(self, h_unit: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(h', mu, log_std) for unit features; the draw is reparameterised, so h' is differentiable."""
        mu, log_std = self.mu(h_unit), self.log_std(h_unit)
        r = mu + log_std.exp() * self.noise(h_unit, generator)
        h_prime = _unit(h_unit + _unit(r) * h_unit.norm(dim=-1, keepdim=True))
        return h_prime, mu, log_std

    def perturb_image(self, h_unit: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.sample(h_unit, generator)[0]


def learned_perturbation_loss(
    module: LearnedPerturbation,
    image_features: Tensor,
    text_features: Tensor,
    temperature: float = 0.1,
    kl_weight: float = 0.05,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict]:
    """Objective for the learned perturbation on paired (image, caption) CLIP features [N, f].

        loss = InfoNCE(h', t; temperature) + kl_weight * KL

    InfoNCE is symmetric (h' -> captions and captions -> h', positives on the diagonal): it pulls
    each pseudo feature towards its own caption's feature and away from the other captions, which
    is what the generator's condition must mimic. Alone it would drive the noise to zero, because
    any randomness only costs matching; the generator would then see one deterministic condition
    per image. KL is the per-dimension mean of KL(N(mu, exp(logstd)^2) || N(0, I)), the VAE prior
    on the noise. Both halves matter: h' depends only on the direction of r, so a penalty on logstd
    alone could be dodged by growing mu until the noise is negligible; the mu^2 term bounds mu and
    the -2 logstd term keeps the std from shrinking, so the random share of r stays finite.

    Returns the loss and detached diagnostics: contrastive, kl, cos_text (mean cos(h', caption)),
    cos_image (mean cos(h', h~)), std (mean exp(logstd)) and spread (1 - mean cos between two
    independent draws for the same image: 0 means the noise has collapsed).
    """
    h = _unit(image_features)
    t = _unit(text_features).to(h.dtype)
    h_prime, mu, log_std = module.sample(h, generator)
    logits = h_prime @ t.T / temperature
    labels = torch.arange(len(h), device=h.device)
    contrastive = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    kl = 0.5 * (mu.square() + (2 * log_std).exp() - 1 - 2 * log_std).mean()
    loss = contrastive + kl_weight * kl
    with torch.no_grad():
        second_draw = module.sample(h, generator)[0]
        terms = {
            "loss": loss.item(),
            "contrastive": contrastive.item(),
            "kl": kl.item(),
            "cos_text": (h_prime * t).sum(-1).mean().item(),
            "cos_image": (h_prime * h).sum(-1).mean().item(),
            "std": log_std.exp().mean().item(),
            "spread": 1 - (h_prime * second_draw).sum(-1).mean().item(),
        }
    return loss, terms


def train_learned_perturbation(
    module: LearnedPerturbation,
    image_features: Tensor,
    text_features: Tensor,
    steps: int,
    batch_size: int,
    lr: float = 1e-4,
    temperature: float = 0.1,
    kl_weight: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Adam on `learned_perturbation_loss` over random batches of paired features (possibly a small
    paired set unrelated to the GAN's images). Returns one dict of loss terms per step."""
    if len(image_features) != len(text_features):
        raise ValueError(
            f"paired features differ in count: {len(image_features)} images, {len(text_features)} captions"
        )
    if batch_size < 2 or batch_size > len(image_features):
        raise ValueError(
            f"batch_size must be in [2, {len(image_features)}] (contrastive needs negatives), got {batch_size}"
        )
    device = next(module.parameters()).device
    images, texts = image_features.to(device).float(), text_features.to(device).float()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    history = []
    bar = tqdm(range(steps), desc="learned perturbation", disable=not progress)
    for step in bar:
        index = torch.randperm(len(images), generator=generator)[:batch_size].to(device)
        loss, terms = learned_perturbation_loss(module, images[index], texts[index], temperature, kl_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"step": step, **terms})
        bar.set_postfix(loss=f"{terms['loss']:.3f}", cos_text=f"{terms['cos_text']:.3f}")
    return history


def save_learned_perturbation(module: LearnedPerturbation, path: str | Path) -> None:
    """Write the weights as safetensors, the file `PerturbationConfig.learned_weights` points to."""
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}, str(path))


def load_learned_perturbation(path: str | Path, feature_dim: int, text_alpha: float = 0.1) -> LearnedPerturbation:
    """Load trained weights (.safetensors, or a torch state dict read with weights_only=True).
    The hidden width is read from the file; the result is frozen so GAN losses cannot change it."""
    path = judge_weights_file(path, "perturbation.learned_weights")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError) as err:
        raise ValueError(
            f"parameter perturbation.learned_weights = {str(path)!r} is not a readable state dict "
            f"({refusal_reason(err)})"
        ) from None
    if "mu.0.weight" not in state:
        raise ValueError(f"{path} is not a learned-perturbation state dict (no 'mu.0.weight')")
    hidden_dim, file_dim = state["mu.0.weight"].shape
    if file_dim != feature_dim:
        raise ValueError(f"{path} holds a perturbation for {file_dim}-d features; the encoder gives {feature_dim}-d")
    module = LearnedPerturbation(feature_dim, hidden_dim, text_alpha)
    module.load_state_dict(state)
    return module.requires_grad_(False).eval()


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"perturbation {name} must be in [0, 1], got {value}")


@PERTURBATIONS.register("none")
def _build_none(cfg: PerturbationConfig, feature_dim: int) -> Perturbation:
    return NoPerturbation()


@PERTURBATIONS.register("gaussian")
def _build_gaussian(cfg: PerturbationConfig, feature_dim: int) -> Perturbation:
    if cfg.xi < 0:
        raise ValueError(f"perturbation xi must be >= 0, got {cfg.xi}")
    _check_fraction("text_alpha", cfg.text_alpha)
    return GaussianPerturbation(cfg.xi, cfg.text_alpha)


@PERTURBATIONS.register("official")
def _build_official(cfg: PerturbationConfig, feature_dim: int) -> Perturbation:
    _check_fraction("image_alpha", cfg.image_alpha)
    _check_fraction("text_alpha", cfg.text_alpha)
    return OfficialPerturbation(cfg.image_alpha, cfg.text_alpha)


def _geometry(cfg: PerturbationConfig, feature_dim: int) -> ModalityGeometry:
    if cfg.geometry is None:
        raise ValueError(
            f"perturbation kind {cfg.kind!r} needs perturbation.geometry, the encoder's modality "
            f"geometry file (python -m lafite_core.measure_modality)"
        )
    geometry = load_geometry(resolve_asset(cfg.geometry))
    if geometry.image_mean.shape[-1] != feature_dim:
        raise ValueError(
            f"parameter perturbation.geometry: {cfg.geometry} describes {geometry.image_mean.shape[-1]}-d "
            f"features; the encoder gives {feature_dim}-d (measure this encoder's geometry)"
        )
    return geometry


def _cosine_range(cfg: PerturbationConfig, cosine: float) -> tuple[float, float] | None:
    if cfg.min_target_cosine is None:
        return None
    if not 0 < cfg.min_target_cosine <= cosine:
        raise ValueError(
            f"parameter perturbation.min_target_cosine = {cfg.min_target_cosine} must be in (0, {cosine:.3g}], "
            f"the target cosine"
        )
    return (cfg.min_target_cosine, cosine)


@PERTURBATIONS.register("calibrated")
def _build_calibrated(cfg: PerturbationConfig, feature_dim: int) -> Perturbation:
    """Gaussian noise sized so that E[cos(h', h~)] is the encoder's matched image/caption cosine."""
    _check_fraction("text_alpha", cfg.text_alpha)
    cosine = cfg.target_cosine if cfg.target_cosine is not None else _geometry(cfg, feature_dim).matched_cosine
    return GaussianPerturbation(noise_ratio(cosine), cfg.text_alpha, _cosine_range(cfg, cosine))


@PERTURBATIONS.register("centred")
def _build_centred(cfg: PerturbationConfig, feature_dim: int) -> Perturbation:
    _check_fraction("text_alpha", cfg.text_alpha)
    geometry = _geometry(cfg, feature_dim)
    cosine = cfg.target_cosine if cfg.target_cosine is not None else geometry.centred_matched_cosine
    return CentredPerturbation(geometry, noise_ratio(cosine), cfg.text_alpha, _cosine_range(cfg, cosine))


@PERTURBATIONS.register("learned")
def _build_learned(cfg: PerturbationConfig, feature_dim: int) -> Perturbation:
    """Untrained (to be trained with `train_learned_perturbation`) unless learned_weights is set."""
    _check_fraction("text_alpha", cfg.text_alpha)
    if cfg.learned_weights is None:
        return LearnedPerturbation(feature_dim, text_alpha=cfg.text_alpha)
    return load_learned_perturbation(cfg.learned_weights, feature_dim, cfg.text_alpha)


def build_perturbation(cfg: PerturbationConfig, feature_dim: int) -> Perturbation:
    """The perturbation named by cfg.kind, for features of size feature_dim (from the encoder)."""
    return PERTURBATIONS.get(cfg.kind)(cfg, feature_dim)
