"""Turning image files into what every dataset yields: square uint8 RGB arrays at the
training resolution, wrapped in an `Item` with their captions.

All datasets share these rules so that a model never sees two preprocessing conventions:
- grey, palette, CMYK and 16-bit images become 8-bit RGB; images with an alpha channel are
  composited over white (transparent pixels often hold arbitrary colours);
- the largest centred square is cropped (no squashing), then resized with Lanczos, the filter
  the StyleGAN2 dataset tool uses;
- a file that cannot be decoded raises `ImageReadError` naming the file, never a placeholder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
ALPHA_BACKGROUND = (255, 255, 255)


@dataclass
class Item:
    """One training example. `image` is uint8 (H, W, 3), already at the dataset's resolution."""

    item_id: str
    image: np.ndarray
    captions: list[str]
    path: str | None = None
    attributes: dict | None = None
    caption_file: str | None = None  # where the captions were read (a sidecar, an annotation file)


class ImageReadError(OSError, ValueError):
    """An image file exists (or should) but cannot be decoded; the message names the file (a
    ValueError too, so every entry point reports it as one `error:` line)."""


def load_image(path: str | Path, resolution: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Read `path` fully (so truncation is caught here, not later) and prepare it.

    `box` = (left, top, right, bottom) crops a region first (CUB's bird boxes); it is clipped
    to the image, and the centre crop then makes the clipped region square."""
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {path}: {err}") from err
    if box is not None:
        width, height = rgb.size
        left, top = max(0, int(box[0])), max(0, int(box[1]))
        right, bottom = min(width, int(box[2])), min(height, int(box[3]))
        if right <= left or bottom <= top:
            raise ImageReadError(f"crop box {box} lies outside image {path} of size {width}x{height}")
        rgb = rgb.crop((left, top, right, bottom))
    return prepare_image(rgb, resolution)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha composited over white, 16-bit scaled down)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def center_crop(image: Image.Image) -> Image.Image:
    """The largest centred square, so non-square images keep their aspect ratio."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def prepare_image(image: Image.Image, resolution: int) -> np.ndarray:
    """RGB PIL image -> centre-cropped, resized uint8 array of shape (resolution, resolution, 3)."""
    square = center_crop(to_rgb(image))
    if square.size != (resolution, resolution):
        square = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(square, dtype=np.uint8).copy()


def grey_to_rgb_array(grey: np.ndarray, resolution: int) -> np.ndarray:
    """A uint8 (H, W) array (e.g. one Fashion-MNIST image) -> prepared RGB array."""
    return prepare_image(Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8)), resolution)
