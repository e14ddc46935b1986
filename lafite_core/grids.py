"""Images as the kit shows them: fixed latents per seed, [-1, 1] floats <-> uint8, and grids of
images (with optional captions) saved as PNG. Training, sampling and evaluation all draw from here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

# A saved grid larger than this is split into pages: PIL refuses to reopen pictures above its
# decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89 megapixels), and viewers struggle well below.
MAX_GRID_PIXELS = 40_000_000


def seed_latents(seeds: Sequence[int], z_dim: int) -> Tensor:
    """One z per seed, each from its own generator: the same latents in every run, on every machine."""
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def latents(seed: int, n: int, z_dim: int) -> Tensor:
    """z for seeds seed, seed+1, ..., seed+n-1 (seed_latents)."""
    if n < 1:
        raise ValueError(f"number of images must be at least 1, got {n}")
    return seed_latents(range(seed, seed + n), z_dim)


def to_uint8(images: Tensor, resolution: int | None = None) -> Tensor:
    """[-1, 1] float images -> uint8 0..255, resized to `resolution` first if given (antialiased)."""
    if resolution is not None and (images.shape[-1] != resolution or images.shape[-2] != resolution):
        images = F.interpolate(
            images.float(), size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
        )
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images: Tensor) -> Tensor:
    """uint8 0..255 images -> float [-1, 1]; float images are returned as float unchanged."""
    return images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()


def image_grid(
    images: Tensor,
    columns: int,
    captions: Sequence[str] | None = None,
    scale: int = 1,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """[N, C, H, W] in [-1, 1] -> one RGB picture, `columns` images a row, each enlarged `scale`
    times (nearest neighbour: a 32 px sample stays crisp); `captions` (one per row) go in a band
    above their row; empty cells show `background`."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected images [N, C, H, W] with N >= 1, got shape {tuple(images.shape)}")
    pixels = to_uint8(images.detach().cpu())
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    n, _, h, w = pixels.shape
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    if captions is not None and len(captions) != rows:
        raise ValueError(f"{len(captions)} captions for {rows} rows of images")
    tile_h, tile_w = h * scale, w * scale
    font = ImageFont.load_default()
    band = _text_height(font) + 6 if captions is not None else 0
    grid = Image.new("RGB", (columns * tile_w, rows * (tile_h + band)), background)
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        r, col = divmod(i, columns)
        tile = Image.fromarray(pixels[i].permute(1, 2, 0).numpy(), "RGB").resize((tile_w, tile_h), Image.NEAREST)
        grid.paste(tile, (col * tile_w, r * (tile_h + band) + band))
    for r, text in enumerate(captions or []):
        draw.text((3, r * (tile_h + band) + 3), _fit(draw, text, font, grid.width - 6), fill=(0, 0, 0), font=font)
    return grid


def _text_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return bottom - top


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """The caption, cut with an ellipsis where it would overflow the row."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def save_grid(
    images: Tensor,
    path: str | Path,
    columns: int,
    captions: Sequence[str] | None = None,
    scale: int = 1,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Path:
    """Write image_grid(...) as a PNG (folders created) and return its path. A grid above
    MAX_GRID_PIXELS is split by rows into pages: `path` holds the first, `<stem>-2.png`, ... the
    rest, and a notice names them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = max(1, min(columns, images.shape[0]))
    rows_per_page = _rows_per_page(images, columns, captions is not None, scale)
    pages = range(math.ceil(math.ceil(images.shape[0] / columns) / rows_per_page))
    for page in pages:
        first, last = page * rows_per_page, (page + 1) * rows_per_page
        chunk = images[first * columns : last * columns]
        picture = image_grid(chunk, columns, captions[first:last] if captions is not None else None, scale, background)
        picture.save(page_path(path, page), format="PNG")
    if len(pages) > 1:
        print(
            f"note: the grid of {math.ceil(images.shape[0] / columns)} rows would exceed {MAX_GRID_PIXELS:,} pixels; "
            f"written as {len(pages)} pages of up to {rows_per_page} rows: {path.name} ... "
            f"{page_path(path, len(pages) - 1).name}",
            flush=True,
        )
    return path


def page_path(path: Path, page: int) -> Path:
    """Page 0 is `path` itself; page k > 0 is `<stem>-<k+1><suffix>` beside it."""
    return path if page == 0 else path.with_name(f"{path.stem}-{page + 1}{path.suffix}")


def _rows_per_page(images: Tensor, columns: int, captioned: bool, scale: int) -> int:
    height, width = images.shape[-2] * scale, images.shape[-1] * scale
    band = _text_height(ImageFont.load_default()) + 6 if captioned else 0
    return max(1, MAX_GRID_PIXELS // (columns * width * (height + band)))


def save_image_grid(images: Tensor, columns: int, path: str | Path) -> Path:
    """A plain grid (no captions, no enlargement, black empty cells) as a PNG: training and evaluation samples."""
    return save_grid(images, path, columns, background=(0, 0, 0))
