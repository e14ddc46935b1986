"""Measure an encoder's modality geometry (lafite_core/modality.py) from a feature cache.

The cache gives the image mean and the matched cosine of its captioned pairs. The text mean comes
from the cache's captions, or from a text file of captions or prompts with no images, so that a
language-free run needs no image-text pair for it.

    python -m lafite_core.measure_modality --cache results/cache/shapes-32-lafite-tiny --texts captions.txt \
        --out geometry.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lafite_core.data.cache import load_cache
from lafite_core.modality import ModalityGeometry, measure, save_geometry
from lafite_core.params import run_main
from lafite_core.sampler import encoder_for


def measure_cache(cache_dir: str | Path, texts: Tensor | None = None) -> ModalityGeometry:
    """Geometry from a feature cache: its images, its captioned pairs, and `texts` (default: the
    cache's own distinct caption features, used as a text-only sample)."""
    cache = load_cache(cache_dir)
    images = torch.from_numpy(np.array(cache.image_features, dtype=np.float32))
    captions = torch.from_numpy(np.array(cache.caption_features, dtype=np.float32))
    if len(captions) == 0:
        raise ValueError(f"cache {cache_dir} has no captions: the matched cosine needs some paired items")
    owners = torch.from_numpy(np.array(cache.caption_item, dtype=np.int64))
    text_sample = captions if texts is None else texts
    details = {
        "cache": str(cache_dir),
        "images": len(images),
        "pairs": len(captions),
        "texts": len(text_sample),
        "text_source": "the cache's captions" if texts is None else "a text file",
        "encoder": cache.meta["encoder"],
    }
    return measure(images, images[owners], captions, text_sample, details)


def encode_text_file(cache_dir: str | Path, path: str | Path) -> Tensor:
    """Features of a text file's lines (one prompt or caption each) by the cache's own encoder."""
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path} holds no text (one prompt or caption per line)")
    encoder = encoder_for(load_cache(cache_dir).meta["encoder"])
    return torch.cat([encoder.encode_text(lines[i : i + 512]) for i in range(0, len(lines), 512)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lafite_core.measure_modality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--cache", required=True, help="a feature cache folder with captioned items")
    parser.add_argument("--out", required=True, help="the geometry file to write (.safetensors)")
    parser.add_argument(
        "--texts", help="a text file, one caption or prompt per line, for the text mean (default: the cache's captions)"
    )
    args = parser.parse_args(argv)
    texts = encode_text_file(args.cache, args.texts) if args.texts else None
    geometry = measure_cache(args.cache, texts)
    save_geometry(geometry, args.out)
    print(
        f"matched cosine {geometry.matched_cosine:.3f}, after centring {geometry.centred_matched_cosine:.3f}, "
        f"gap between the modality means {geometry.gap:.3f} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
