"""Datasets: every kind yields `Item`s (uint8 HxWx3 image at the chosen resolution + captions).

    ds = build_dataset("shapes", None, 32, size=60000, seed=0, split="train")
    ds = build_dataset("coco", "/data/coco", 256, split="train")
    len(ds); ds[i] -> Item; ds.fingerprint() -> str; ds.skipped -> [(path, reason)]

`fingerprint()` is a stable hash of what the dataset yields (kind, resolution, options, and
the file listing or the procedural parameters); the embedding cache compares it to detect a
dataset that changed under it.
"""

from __future__ import annotations

import dataclasses
import inspect

from lafite_core.config import DataConfig
from lafite_core.data.images import IMAGE_EXTENSIONS, ImageReadError, Item, load_image
from lafite_core.data.readers import (
    AnnotationError,
    CaptionReadError,
    EmptyDatasetError,
    FashionMNIST,
    FileDataset,
    read_coco,
    read_cub,
    read_fashion_mnist,
    read_image_folder,
    read_ln_coco,
    read_mm_celeba_hq,
)
from lafite_core.data.shapes import HELDOUT_COMBINATIONS, ShapesDataset, build_shapes, caption_for
from lafite_core.registry import Registry

DATASETS = Registry("dataset")
DATASETS.register("shapes", build_shapes)
DATASETS.register("image_folder", read_image_folder)
DATASETS.register("coco", read_coco)
DATASETS.register("cub", read_cub)
DATASETS.register("ln_coco", read_ln_coco)
DATASETS.register("mm_celeba_hq", read_mm_celeba_hq)
DATASETS.register("fashion_mnist", read_fashion_mnist)


def build_dataset(kind: str, root: str | None, resolution: int, **kwargs):
    """The dataset registered as `kind`; kwargs are that reader's options (split, ...)."""
    return DATASETS.get(kind)(root, resolution, **kwargs)


def dataset_from_config(cfg: DataConfig):
    """Build from a DataConfig. Each field means something only to the kinds whose reader takes it
    (size and seed: shapes; year: coco; ...), so each reader gets the fields it names."""
    factory = DATASETS.get(cfg.kind)
    accepted = inspect.signature(factory).parameters
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("kind", "root", "resolution")}
    fields["year"] = str(fields["year"])  # `--set data.year=2017` reads as a number; the layouts name it as text
    return factory(cfg.root, cfg.resolution, **{k: v for k, v in fields.items() if k in accepted})


__all__ = [
    "DATASETS",
    "build_dataset",
    "dataset_from_config",
    "Item",
    "ShapesDataset",
    "FileDataset",
    "FashionMNIST",
    "HELDOUT_COMBINATIONS",
    "caption_for",
    "load_image",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "CaptionReadError",
    "AnnotationError",
    "EmptyDatasetError",
]
