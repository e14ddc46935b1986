"""Captioned Shapes: a procedural captioned image dataset, small enough for CPU experiments.

Each image shows one shape on a plain background. Its five attributes (shape, colour, size,
position, background) and a small jitter (offset of up to 3 steps of 1.5% of the side in x
and y, scale 0.85-1.15) are a pure function of (seed, split, index). Captions are templates
over the attributes, from long ("a small red triangle in the top left corner on a black
background") to short ("red triangle, top left").

Zero-shot split: the (shape, colour) pairs in HELDOUT_COMBINATIONS never appear in `train`
or `test`; they make up `heldout`. Every shape and every colour still appears in training in
other pairs, so "a red star" is a new combination of known words, not a new word.

How indices map to images: all attribute x jitter tuples (235,200) are numbered, each gets
a 64-bit hash of (seed, tuple number), and each split lists its tuples in hash order:
`heldout` = the held-out pairs, `test` = about 10% of the other tuples (picked by other hash
bits), `train` = the rest. So splits never share an image, no two items of a split are
the same image, and index i of a split is the same image on every machine.
"""
from __future__ import annotations

import functools
import hashlib
import json

import numpy as np

from lafite_core.data.images import Item

RENDER_VERSION = 1  # bump when pixels change, so cached embeddings are invalidated

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS = {  # no colour is black or grey: those are backgrounds
    "red": (230, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 80, 240),
    "yellow": (245, 220, 30),
    "magenta": (225, 40, 225),
    "cyan": (40, 220, 230),
    "orange": (255, 135, 20),
    "white": (245, 245, 245),
}
SIZES = {"small": 0.14, "large": 0.23}  # radius as a fraction of the image side
POSITIONS = {  # shape centre as (x, y) fractions of the image side, y pointing down
    "top left": (0.31, 0.31),
    "top right": (0.69, 0.31),
    "bottom left": (0.31, 0.69),
    "bottom right": (0.69, 0.69),
    "center": (0.5, 0.5),
}
BACKGROUNDS = {"black": (0, 0, 0), "gray": (110, 110, 110)}

ATTRIBUTE_NAMES = ("shape", "colour", "size", "position", "background")
VOCABULARIES = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
    "background": tuple(BACKGROUNDS),
}

# Held out of train/test for zero-shot evaluation: one pair per shape, six different colours.
HELDOUT_COMBINATIONS = (
    ("circle", "orange"),
    ("square", "magenta"),
    ("triangle", "cyan"),
    ("star", "red"),
    ("diamond", "yellow"),
    ("cross", "blue"),
)

OFFSET_STEP = 0.015  # jitter step as a fraction of the image side (about 0.5 px at 32 px)
OFFSET_STEPS = tuple(range(-3, 4))
# Jitter steps move some edge by more than one supersample spacing at 32 px (0.25 px), so
# every tuple renders to different pixels at resolution >= 32.
SCALES = (0.85, 0.925, 1.0, 1.075, 1.15)
TEST_FRACTION_DENOMINATOR = 10  # about 1 in 10 seen tuples goes to `test`
SPLITS = ("train", "test", "heldout", "all")

SPACE_DIMS = tuple(len(v) for v in VOCABULARIES.values()) + (len(OFFSET_STEPS), len(OFFSET_STEPS), len(SCALES))
SPACE_SIZE = int(np.prod(SPACE_DIMS))


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return list(zip(radii * np.cos(angles), radii * np.sin(angles)))


def _cross(arm: float = 0.32, extent: float = 0.95) -> list[tuple[float, float]]:
    a, e = arm, extent
    return [(-a, -e), (a, -e), (a, -a), (e, -a), (e, a), (a, a),
            (a, e), (-a, e), (-a, a), (-e, a), (-e, -a), (-a, -a)]


# Outlines in units of the shape's radius (y down). Circle is handled analytically. The
# diamond is narrower than tall so that it cannot be mistaken for a rotated square.
POLYGONS = {
    "square": [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)],
    "triangle": [(0.0, -0.9), (0.95, 0.8), (-0.95, 0.8)],
    "star": _star(),
    "diamond": [(0.0, -1.0), (0.7, 0.0), (0.0, 1.0), (-0.7, 0.0)],
    "cross": _cross(),
}

# ---------------------------------------------------------------------------------------
# Captions

POSITION_PHRASES = {  # (long, short)
    "top left": ("in the top left corner", "top left"),
    "top right": ("in the top right corner", "top right"),
    "bottom left": ("in the bottom left corner", "bottom left"),
    "bottom right": ("in the bottom right corner", "bottom right"),
    "center": ("in the center", "center"),
}

# Template 0 is the long form and names every attribute; the others vary phrasing and length.
CAPTION_TEMPLATES = (
    "a {size} {colour} {shape} {position_long} on a {background} background",
    "{colour} {shape}, {position_short}",
    "a {size} {shape}, colored {colour}, {position_long}",
    "there is a {colour} {shape} {position_long}",
    "a {size} {colour} {shape} against a {background} background",
    "{colour} {shape}",
)


def caption_for(attributes: dict, template_index: int = 0) -> str:
    """One caption of an attribute dict (only the five attribute names are read)."""
    long_phrase, short_phrase = POSITION_PHRASES[attributes["position"]]
    return CAPTION_TEMPLATES[template_index].format(
        size=attributes["size"],
        colour=attributes["colour"],
        shape=attributes["shape"],
        background=attributes["background"],
        position_long=long_phrase,
        position_short=short_phrase,
    )


def captions_for(attributes: dict) -> list[str]:
    return [caption_for(attributes, t) for t in range(len(CAPTION_TEMPLATES))]


def class_prompts(attribute: str) -> dict[str, str]:
    """Prompt per value of one attribute, for zero-shot classification of generated images."""
    forms = {
        "shape": "a {}",
        "colour": "a {} shape",
        "size": "a {} shape",
        "position": "a shape {}",
        "background": "a shape on a {} background",
    }
    if attribute not in forms:
        raise KeyError(f"unknown shapes attribute {attribute!r}; known: {', '.join(ATTRIBUTE_NAMES)}")
    if attribute == "position":
        return {v: forms[attribute].format(POSITION_PHRASES[v][0]) for v in POSITIONS}
    return {v: forms[attribute].format(v) for v in VOCABULARIES[attribute]}


def attribute_combinations(which: str = "all") -> list[dict]:
    """Every attribute combination (no jitter): which = "all" | "seen" | "heldout"."""
    if which not in ("all", "seen", "heldout"):
        raise ValueError(f"which must be all, seen or heldout, got {which!r}")
    combos = []
    for values in np.ndindex(*SPACE_DIMS[: len(ATTRIBUTE_NAMES)]):
        attributes = {name: VOCABULARIES[name][i] for name, i in zip(ATTRIBUTE_NAMES, values)}
        held = (attributes["shape"], attributes["colour"]) in HELDOUT_COMBINATIONS
        if which == "all" or held == (which == "heldout"):
            combos.append(attributes)
    return combos


def combination_prompts(template_index: int = 0, which: str = "all") -> list[tuple[dict, str]]:
    """(attributes, caption) for every combination: the prompt list for evaluation."""
    return [(a, caption_for(a, template_index)) for a in attribute_combinations(which)]


# ---------------------------------------------------------------------------------------
# Which tuple each split index shows


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fixed, numpy-version-independent 64-bit hash."""
    x = x.astype(np.uint64)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.lru_cache(maxsize=4)
def split_tuples(seed: int) -> dict[str, np.ndarray]:
    """Tuple numbers of each split, in the seed's hash order (about 20 ms, cached)."""
    numbers = np.arange(SPACE_SIZE, dtype=np.uint64)
    key = _mix64(numbers ^ _mix64(np.array([seed], dtype=np.uint64))[0])
    shape_i, colour_i = np.unravel_index(numbers.astype(np.int64), SPACE_DIMS)[:2]
    held = np.zeros((len(SHAPES), len(COLOURS)), dtype=bool)
    for shape, colour in HELDOUT_COMBINATIONS:
        held[SHAPES.index(shape), VOCABULARIES["colour"].index(colour)] = True
    heldout = held[shape_i, colour_i]
    test = ((key >> np.uint64(40)) % np.uint64(TEST_FRACTION_DENOMINATOR) == 0) & ~heldout
    order = np.argsort(key, kind="stable")
    return {
        "all": order,
        "heldout": order[heldout[order]],
        "test": order[test[order]],
        "train": order[~(heldout | test)[order]],
    }


def tuple_attributes(number: int) -> dict:
    """Attributes and jitter of tuple `number` of the full space."""
    idx = np.unravel_index(int(number), SPACE_DIMS)
    attributes = {name: VOCABULARIES[name][i] for name, i in zip(ATTRIBUTE_NAMES, idx)}
    dx, dy, scale = idx[len(ATTRIBUTE_NAMES):]
    attributes["offset"] = (OFFSET_STEPS[dx] * OFFSET_STEP, OFFSET_STEPS[dy] * OFFSET_STEP)
    attributes["scale"] = SCALES[scale]
    return attributes


# ---------------------------------------------------------------------------------------
# Rendering


def _edges(vertices) -> np.ndarray:
    """[E, 4] non-horizontal edges (x1, y1, x2, y2) of a closed outline."""
    pairs = zip(vertices, vertices[1:] + vertices[:1])
    return np.array([(x1, y1, x2, y2) for (x1, y1), (x2, y2) in pairs if y1 != y2], dtype=np.float64)


EDGES = {shape: _edges(outline) for shape, outline in POLYGONS.items()}


def _polygon_row_spans(columns: np.ndarray, rows: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Even-odd rule, one scanline per sample row: [H, K] sample ranges [start, stop) inside.

    A sample at x is inside when an odd number of its row's edge crossings lie right of it, so
    the row's sorted crossings pair up into inside ranges. Working per row instead of per
    sample keeps a star at 64 px nearly as cheap as a square at 32."""
    x1, y1, x2, y2 = (edges[:, k, None] for k in range(4))  # [E, 1]
    crosses = (y1 > rows) != (y2 > rows)  # [E, H]; half-open, so a vertex counts once
    x_at_row = x1 + (rows - y1) * (x2 - x1) / (y2 - y1)
    most = int(crosses.sum(axis=0).max())  # even: a closed outline crosses a row an even number of times
    crossings = np.sort(np.where(crosses, x_at_row, np.inf), axis=0)[:most]  # a row's crossings first
    first_right = np.searchsorted(columns, crossings.T)  # [H, most] samples left of each crossing
    return first_right[:, 0::2], first_right[:, 1::2]


def _circle_row_spans(columns: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[H, 1] sample ranges inside the unit circle: x^2 + y^2 <= 1 grows with |x|, so a row's
    inside samples are one run."""
    inside = columns[None, :] ** 2 + rows[:, None] ** 2 <= 1.0
    start = inside.argmax(axis=1)
    return start[:, None], (start + inside.sum(axis=1))[:, None]


def _coverage_counts(shape: str, columns: np.ndarray, rows: np.ndarray, supersample: int) -> np.ndarray:
    """[h, w] how many of each pixel's supersample^2 samples the shape covers (in shape units)."""
    if shape == "circle":
        start, stop = _circle_row_spans(columns, rows)
    else:
        start, stop = _polygon_row_spans(columns, rows, EDGES[shape])
    pixel_edges = np.arange(0, len(columns) + 1, supersample)  # first sample of each pixel, and the end
    # inside samples left of each pixel edge, per row: over the row's ranges, clip(edge, start, stop) - start
    left_of = (np.minimum(np.maximum(pixel_edges, start[..., None]), stop[..., None]) - start[..., None]).sum(axis=1)
    per_row = np.diff(left_of, axis=1)  # [H, w]
    return per_row.reshape(len(rows) // supersample, supersample, -1).sum(axis=1)


@functools.lru_cache(maxsize=256)
def _blend_table(colour: str, background: str, supersample: int) -> np.ndarray:
    """[supersample^2 + 1, 3] uint8 pixel for each covered-sample count: the blend in float32, rounded."""
    coverage = np.arange(supersample * supersample + 1, dtype=np.float32)[:, None] / np.float32(supersample ** 2)
    back = np.array(BACKGROUNDS[background], dtype=np.float32)
    front = np.array(COLOURS[colour], dtype=np.float32)
    return np.rint(back * (1.0 - coverage) + front * coverage).astype(np.uint8)


def render(attributes: dict, resolution: int, supersample: int = 4) -> np.ndarray:
    """Draw one item as uint8 (resolution, resolution, 3), anti-aliased by supersampling.

    Only the shape's bounding box is sampled, and the box's pixels come from a lookup table
    of the few possible blends: rendering stays far cheaper than encoding the image."""
    cx, cy = POSITIONS[attributes["position"]]
    dx, dy = attributes.get("offset", (0.0, 0.0))
    cx, cy = cx + dx, cy + dy
    radius = SIZES[attributes["size"]] * attributes.get("scale", 1.0)

    def pixel_span(centre: float) -> tuple[int, int]:
        low, high = np.floor((centre - radius) * resolution), np.ceil((centre + radius) * resolution)
        return max(0, int(low)), min(resolution, int(high))

    (x0, x1), (y0, y1) = pixel_span(cx), pixel_span(cy)
    n = resolution * supersample
    columns = ((np.arange(x0 * supersample, x1 * supersample) + 0.5) / n - cx) / radius
    rows = ((np.arange(y0 * supersample, y1 * supersample) + 0.5) / n - cy) / radius
    counts = _coverage_counts(attributes["shape"], columns, rows, supersample)
    image = np.empty((resolution, resolution, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[attributes["background"]]
    image[y0:y1, x0:x1] = _blend_table(attributes["colour"], attributes["background"], supersample)[counts]
    return image


# ---------------------------------------------------------------------------------------
# The dataset


class ShapesDataset:
    """Captioned Shapes, one split: `ds[i]` renders item i on the fly (no files)."""

    kind = "shapes"
    attribute_names = ATTRIBUTE_NAMES
    vocabularies = VOCABULARIES
    heldout_combinations = HELDOUT_COMBINATIONS

    def __init__(
        self, resolution: int = 32, size: int = 60000, seed: int = 0, split: str = "train", supersample: int = 4
    ):
        if split not in SPLITS:
            raise ValueError(f"shapes split must be one of {', '.join(SPLITS)}; got {split!r}")
        if resolution < 16:
            raise ValueError(f"shapes resolution must be at least 16 px to tell shapes apart; got {resolution}")
        if seed < 0:
            raise ValueError(f"shapes seed must be >= 0; got {seed}")
        pool = split_tuples(seed)[split]
        if not 1 <= size <= len(pool):
            raise ValueError(
                f"shapes split {split!r} has {len(pool)} distinct images; size must be 1..{len(pool)}, got {size}")
        self.resolution, self.size, self.seed, self.split = resolution, size, seed, split
        self.supersample = supersample
        self._tuples = pool[:size]
        self.skipped: list[tuple[str, str]] = []  # procedural: nothing is ever skipped

    def __len__(self) -> int:
        return self.size

    def _number(self, index: int) -> int:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for shapes {self.split} of size {self.size}")
        return int(self._tuples[index])

    def attributes(self, index: int) -> dict:
        """Attributes of item `index` without rendering it."""
        return tuple_attributes(self._number(index))

    def item_id(self, index: int) -> str:
        """Named by tuple number, so the same image has the same id in every split."""
        return f"shapes-{self._number(index)}"

    def __getitem__(self, index: int) -> Item:
        attributes = self.attributes(index)
        return Item(
            item_id=self.item_id(index),
            image=render(attributes, self.resolution, self.supersample),
            captions=captions_for(attributes),
            path=None,
            attributes=attributes,
        )

    def metadata(self) -> dict:
        """Everything a results table needs to describe this dataset and its zero-shot split."""
        pools = split_tuples(self.seed)
        return {
            "name": "captioned_shapes",
            "render_version": RENDER_VERSION,
            "split": self.split,
            "seed": self.seed,
            "size": self.size,
            "resolution": self.resolution,
            "vocabularies": {k: list(v) for k, v in VOCABULARIES.items()},
            "heldout_combinations": [list(pair) for pair in HELDOUT_COMBINATIONS],
            "caption_templates": list(CAPTION_TEMPLATES),
            "counts": {
                "attribute_combinations": int(np.prod(SPACE_DIMS[: len(ATTRIBUTE_NAMES)])),
                "jitter_variants": int(np.prod(SPACE_DIMS[len(ATTRIBUTE_NAMES):])),
                **{name: int(len(pool)) for name, pool in pools.items()},
            },
        }

    def fingerprint(self) -> str:
        spec = {"kind": self.kind, "render_version": RENDER_VERSION, "resolution": self.resolution,
                "size": self.size, "seed": self.seed, "split": self.split, "supersample": self.supersample}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def build_shapes(
    root: str | None, resolution: int, size: int = 60000, seed: int = 0, split: str = "train"
) -> ShapesDataset:
    """Registry entry: Captioned Shapes is procedural, so it has no root."""
    if root is not None:
        raise ValueError(f"the shapes dataset is procedural and reads no files; root must be None, got {root!r}")
    return ShapesDataset(resolution=resolution, size=size, seed=seed, split=split)
