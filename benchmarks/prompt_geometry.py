"""Where each prompt form's text feature sits, and what survives the noise: facts for choosing a
perturbation on a Shapes feature cache.

For every prompt form of the judge (lafite_core/prompt_following.py: caption templates t0-t5 and
"a {shape}"), the mean cosine between a prompt's text feature and the image features of the training
images it describes, before and after centring (the `centred` perturbation's shift). A perturbation
whose pseudo features keep cos(h', h) near a form's figure puts that form's text features where
training conditions were. Then, per noise level, how often a nearest-class-mean probe still reads each
attribute from the pseudo features: what a generator could read from its condition.

    python benchmarks/prompt_geometry.py                                   # the first tiny encoder
    python benchmarks/prompt_geometry.py --cache results/cache/shapes-32-lafite-tiny-cliplike \\
        --weights lafite_core/assets/lafite-tiny-shapes-cliplike.safetensors \\
        --geometry lafite_core/assets/lafite-tiny-shapes-cliplike.geometry.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from lafite_core.assets import resolve_asset
from lafite_core.config import EncoderConfig
from lafite_core.data.cache import load_cache
from lafite_core.data.shapes import ATTRIBUTE_NAMES, VOCABULARIES, ShapesDataset
from lafite_core.encoders import load_encoder
from lafite_core.modality import load_geometry, noise_ratio
from lafite_core.perturbations import gaussian_perturb
from lafite_core.prompt_following import FORMS, prompt_set

NOISE_COSINES = (0.9, 0.7, 0.53, 0.4, 0.3, 0.2)


def form_cosines(encoder, features: dict[str, torch.Tensor], attributes: list[dict]) -> None:
    """Mean (and std) cosine of each form's prompts to the images they describe."""
    for form in FORMS:
        prompts = prompt_set(form, "seen")
        text = F.normalize(encoder.encode_text(list(prompts.prompts)).float(), dim=-1)
        index = {tuple(v[a] for a in prompts.named): i for i, v in enumerate(prompts.values)}
        rows = torch.tensor([index.get(tuple(x[a] for a in prompts.named), -1) for x in attributes])
        kept = rows >= 0
        cells = []
        for name, h in features.items():
            cos = (text[rows[kept]] * h[kept]).sum(-1)
            cells.append(f"{name} {cos.mean():.3f} ± {cos.std():.3f}")
        print(f"{form:8s} ({prompts.prompts[0]!r}): cos(t, h) " + ", ".join(cells))


def attribute_probe(features: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> None:
    """Nearest-class-mean accuracy of each attribute read from noisy features, per noise level."""
    g = torch.Generator().manual_seed(0)
    for name, h in features.items():
        means = {
            a: F.normalize(torch.stack([h[labels[a] == k].mean(0) for k in range(len(VOCABULARIES[a]))]), dim=-1)
            for a in ATTRIBUTE_NAMES
        }
        for cosine in NOISE_COSINES:
            noisy = gaussian_perturb(h, noise_ratio(cosine), torch.randn(h.shape, generator=g))
            read = {a: ((noisy @ means[a].T).argmax(1) == labels[a]).float().mean().item() for a in ATTRIBUTE_NAMES}
            print(f"{name:8s} noise to cos {cosine}: " + " ".join(f"{a} {v:.2f}" for a, v in read.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="results/cache/shapes-32-lafite-tiny")
    parser.add_argument("--weights", default="lafite_core/assets/lafite-tiny-shapes.safetensors")
    parser.add_argument("--geometry", default="lafite_core/assets/lafite-tiny-shapes.geometry.safetensors")
    parser.add_argument("--images", type=int, default=20000, help="first cached images to read")
    args = parser.parse_args()
    cache = load_cache(args.cache)
    h = F.normalize(torch.from_numpy(np.asarray(cache.image_features[: args.images], dtype=np.float32)), dim=-1)
    dataset = ShapesDataset(size=len(cache))
    attributes = [dataset.attributes(int(i)) for i in cache.dataset_index[: args.images]]
    labels = {a: torch.tensor([VOCABULARIES[a].index(x[a]) for x in attributes]) for a in ATTRIBUTE_NAMES}
    geometry = load_geometry(resolve_asset(args.geometry))
    features = {"plain": h, "centred": geometry.centre(h)}
    encoder = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=args.weights))
    with torch.no_grad():
        form_cosines(encoder, features, attributes)
    attribute_probe(features, labels)


if __name__ == "__main__":
    main()
