"""The modality geometry of an encoder: how far its text features sit from its image features.

LAFITE's noise is sized for CLIP, whose matched image/caption cosine is about 0.3. Another encoder
has another gap, and the perturbation that fits it follows from three measurements, stored in one
small safetensors file per encoder (and read by the `calibrated` and `centred` perturbations):

- `matched_cosine`: mean cos(image feature, its caption's feature) over paired items;
- `image_mean`, `text_mean`: the mean unit feature of each modality, and `gap`, the distance between
  them (Liang et al. 2022, "Mind the Gap"). The text mean needs only text, never paired with images
  (C3, Zhang et al. 2024), so training stays language-free;
- `centred_matched_cosine`: the matched cosine left after moving image features by
  text_mean - image_mean, which is what the `centred` perturbation's noise is sized for.

`python -m lafite_core.measure_modality` measures it from a feature cache.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from lafite_core.tensor_files import read_tagged_safetensors

FORMAT = "lafite-modality-geometry-v1"


@dataclass
class ModalityGeometry:
    image_mean: Tensor  # [f] mean of unit image features
    text_mean: Tensor  # [f] mean of unit text features (unpaired text is enough)
    matched_cosine: float
    centred_matched_cosine: float
    details: dict  # counts, sources and the encoder identity, as recorded

    @property
    def gap(self) -> float:
        return float((self.image_mean - self.text_mean).norm())

    def centre(self, h_unit: Tensor) -> Tensor:
        return centre(h_unit, self.image_mean, self.text_mean)


def centre(h_unit: Tensor, image_mean: Tensor, text_mean: Tensor) -> Tensor:
    """Move unit image features across the gap: norm(h - image_mean + text_mean)."""
    shift = (text_mean - image_mean).to(device=h_unit.device, dtype=h_unit.dtype)
    return F.normalize(h_unit + shift, dim=-1)


def noise_ratio(target_cosine: float) -> float:
    """Gaussian xi whose pseudo feature keeps E[cos(h', h)] = target (high-dimensional limit):
    xi = sqrt(1 / c^2 - 1). LAFITE's interpolation weight 0.75 is this rule at c = 0.316."""
    if not 0 < target_cosine <= 1:
        raise ValueError(f"a target cosine must be in (0, 1], got {target_cosine}")
    return math.sqrt(1 / target_cosine**2 - 1)


def measure(
    image_features: Tensor, paired_images: Tensor, paired_texts: Tensor, texts: Tensor, details: dict | None = None
) -> ModalityGeometry:
    """Geometry from image features [N, f], paired (image, caption) features [M, f] each, and
    text features [T, f] (any text: the text mean's source)."""
    image_mean = F.normalize(image_features.float(), dim=-1).mean(0)
    text_mean = F.normalize(texts.float(), dim=-1).mean(0)
    pi, pt = F.normalize(paired_images.float(), dim=-1), F.normalize(paired_texts.float(), dim=-1)
    matched = float((pi * pt).sum(-1).mean())
    centred = float((centre(pi, image_mean, text_mean) * pt).sum(-1).mean())
    return ModalityGeometry(image_mean, text_mean, matched, centred, dict(details or {}))


def save_geometry(geometry: ModalityGeometry, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "matched_cosine": repr(geometry.matched_cosine),
        "centred_matched_cosine": repr(geometry.centred_matched_cosine),
        "gap": repr(geometry.gap),
        "details": json.dumps(geometry.details, sort_keys=True),
    }
    tensors = {"image_mean": geometry.image_mean.contiguous(), "text_mean": geometry.text_mean.contiguous()}
    save_file(tensors, str(path), metadata=meta)
    return path


def load_geometry(path: str | Path, parameter: str = "perturbation.geometry") -> ModalityGeometry:
    """Read a geometry file; errors name the parameter that pointed at it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"parameter {parameter}: modality geometry file not found: {path} "
            f"(make one with `python -m lafite_core.measure_modality --cache <cache> --out {path}`)"
        )
    try:
        tensors, meta = read_tagged_safetensors(path, FORMAT)
    except ValueError as err:
        raise ValueError(f"parameter {parameter}: {err}") from None
    return ModalityGeometry(
        tensors["image_mean"].float(),
        tensors["text_mean"].float(),
        float(meta["matched_cosine"]),
        float(meta["centred_matched_cosine"]),
        json.loads(meta["details"]),
    )
