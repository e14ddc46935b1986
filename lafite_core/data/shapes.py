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
import operator
import re
import string

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
    return [(-a, -e), (a, -e), (a, -a), (e, -a), (e, a), (a, a), (a, e), (-a, e), (-a, a), (-e, a), (-e, -a), (-a, -a)]


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


def fill_template(template: str, attributes: dict) -> str:
    """A caption template filled with an attribute dict (only the five attribute names are read)."""
    long_phrase, short_phrase = POSITION_PHRASES[attributes["position"]]
    values = {name: attributes[name] for name in ATTRIBUTE_NAMES if name != "position"}
    return template.format(position_long=long_phrase, position_short=short_phrase, **values)


def caption_for(attributes: dict, template_index: int = 0) -> str:
    """One caption of an attribute dict: CAPTION_TEMPLATES[template_index] filled in."""
    return fill_template(CAPTION_TEMPLATES[template_index], attributes)


def template_attributes(template: str) -> frozenset[str]:
    """The attributes a caption template names ("position_long" and "position_short" name position)."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    return frozenset("position" if f.startswith("position") else f for f in fields)


def caption_attributes() -> list[tuple[str, ...]]:
    """For each of CAPTION_TEMPLATES, the attributes it names (in ATTRIBUTE_NAMES order)."""
    return [tuple(a for a in ATTRIBUTE_NAMES if a in template_attributes(t)) for t in CAPTION_TEMPLATES]


_ATTRIBUTE_VALUES = operator.itemgetter(*ATTRIBUTE_NAMES)


def captions_for(attributes: dict) -> list[str]:
    return list(_captions(*_ATTRIBUTE_VALUES(attributes)))


@functools.lru_cache(maxsize=None)  # 960 attribute combinations: each item's captions are formatted once
def _captions(*values: str) -> tuple[str, ...]:
    attributes = dict(zip(ATTRIBUTE_NAMES, values))
    return tuple(caption_for(attributes, t) for t in range(len(CAPTION_TEMPLATES)))


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


def caption_words() -> frozenset[str]:
    """Every word a Shapes caption can hold (the templates' own words, attribute values and position
    phrases): all the text an encoder trained only on Shapes captions has read."""
    texts = [re.sub(r"\{\w+\}", " ", t) for t in CAPTION_TEMPLATES]
    texts += [value for values in VOCABULARIES.values() for value in values]
    texts += [phrase for phrases in POSITION_PHRASES.values() for phrase in phrases]
    return frozenset(re.findall(r"[a-z]+", " ".join(texts)))


def example_prompts() -> list[str]:
    """One caption per template, each with other attribute values: prompts in the captions' own words."""
    return [
        fill_template(template, {name: values[i % len(values)] for name, values in VOCABULARIES.items()})
        for i, template in enumerate(CAPTION_TEMPLATES)
    ]


def background_notes(prompt: str) -> list[str]:
    """Shapes draws only BACKGROUNDS: a prompt that asks for another ("on a white background") gets
    one of those, and saying so is the only way a person learns it."""
    asked = re.findall(r"([a-z]+)\s+background", prompt.lower())
    return [
        f"Shapes backgrounds are {' or '.join(BACKGROUNDS)}: there is no {word} background"
        + (f" ({word} is a shape colour)" if word in COLOURS else "")
        for word in dict.fromkeys(asked)
        if word not in BACKGROUNDS
    ]


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
    return tuples_attributes([number])[0]


def tuples_attributes(numbers) -> list[dict]:
    """`tuple_attributes` of many tuples, unravelled at once."""
    columns = np.unravel_index(np.asarray(numbers, dtype=np.int64), SPACE_DIMS)
    vocabularies = [VOCABULARIES[name] for name in ATTRIBUTE_NAMES]
    out = []
    for idx in zip(*(c.tolist() for c in columns)):
        attributes = {name: vocabulary[i] for name, vocabulary, i in zip(ATTRIBUTE_NAMES, vocabularies, idx)}
        dx, dy, scale = idx[len(ATTRIBUTE_NAMES) :]
        attributes["offset"] = (OFFSET_STEPS[dx] * OFFSET_STEP, OFFSET_STEPS[dy] * OFFSET_STEP)
        attributes["scale"] = SCALES[scale]
        out.append(attributes)
    return out


# ---------------------------------------------------------------------------------------
# Rendering


def _edges(vertices) -> np.ndarray:
    """[E, 4] non-horizontal edges (x1, y1, x2, y2) of a closed outline."""
    pairs = zip(vertices, vertices[1:] + vertices[:1])
    return np.array([(x1, y1, x2, y2) for (x1, y1), (x2, y2) in pairs if y1 != y2], dtype=np.float64)


EDGES = {shape: _edges(outline) for shape, outline in POLYGONS.items()}


def _polygon_row_spans(columns: np.ndarray, rows: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Even-odd rule, one scanline per sample row, for a batch of one shape: columns [B, W] (sorted,
    +inf padded), rows [B, H] -> [K, B, H] sample ranges [start, stop) inside.

    A sample at x is inside when an odd number of its row's edge crossings lie right of it, so the
    row's sorted crossings pair up into inside ranges: the work grows with rows, not samples. Edges
    and crossings come first in every array, so each operation runs along the long B x H axis."""
    x1, y1, x2, y2 = (edges[:, k, None, None] for k in range(4))  # [E, 1, 1]
    crosses = (y1 > rows) != (y2 > rows)  # [E, B, H]; half-open, so a vertex counts once
    with np.errstate(invalid="ignore"):  # padding rows are +inf; they cross nothing
        x_at_row = x1 + (rows - y1) * (x2 - x1) / (y2 - y1)
    most = int(np.count_nonzero(crosses, axis=0).max())  # even: a closed outline crosses a row an even number of times
    if most == 2:  # a convex outline: a row's crossings are its leftmost and rightmost (none: both +inf)
        right = np.where(crosses, x_at_row, -np.inf).max(axis=0)
        crossings = np.stack(
            [np.where(crosses, x_at_row, np.inf).min(axis=0), np.where(np.isfinite(right), right, np.inf)]
        )
    else:
        crossings = np.sort(np.where(crosses, x_at_row, np.inf), axis=0)[:most]  # a row's crossings first
    first_right = _count_below(columns, crossings.transpose(1, 0, 2)).transpose(1, 0, 2)  # samples left of each
    return first_right[0::2], first_right[1::2]


def _count_below(columns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per item b, how many of columns[b] (sorted, evenly spaced where finite, +inf padded) are
    below each of values[b] (any shape): a searchsorted for the whole batch at once.

    The even spacing gives a guess that rounding can put one off; the guess is then moved until
    columns[k - 1] < value <= columns[k], which is exactly searchsorted's answer."""
    count, width = columns.shape
    padded = np.concatenate([np.full((count, 1), -np.inf), columns, np.full((count, 1), np.inf)], axis=1)
    finite = np.isfinite(columns).sum(axis=1, keepdims=True)  # past them, the answer is `finite`
    step = np.where(finite > 1, columns[:, 1:2] - columns[:, :1], 1.0) if width > 1 else np.ones((count, 1))
    flat_values = values.reshape(count, -1)
    with np.errstate(over="ignore"):
        guess = np.ceil((flat_values - columns[:, :1]) / step)
    k = np.clip(guess, 0, finite).astype(np.intp)  # a value of +inf (no crossing) clips to `finite`
    rows = padded.ravel()
    row_start = (width + 2) * np.arange(count)[:, None]
    while True:  # padded[k] is columns[k - 1], padded[k + 1] is columns[k]
        at = row_start + k
        too_far = rows[at] >= flat_values
        too_near = rows[at + 1] < flat_values
        if not (too_far.any() or too_near.any()):
            return k.reshape(values.shape)
        k += too_near.astype(np.intp) - too_far.astype(np.intp)


def _circle_row_spans(columns: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[1, B, H] sample ranges inside the unit circle: x^2 + y^2 <= 1 grows with |x|, so a row's
    inside samples are one run."""
    inside = columns[:, None, :] ** 2 + rows[:, :, None] ** 2 <= 1.0  # [B, H, W]
    start = inside.argmax(axis=2)
    return start[None], (start + inside.sum(axis=2))[None]


def _coverage_counts(shape: str, columns: np.ndarray, rows: np.ndarray, supersample: int) -> np.ndarray:
    """[B, h, w] how many of each pixel's supersample^2 samples the shape covers, for sample
    columns [B, W] and rows [B, H] in shape units (padding: +inf)."""
    if shape == "circle":
        start, stop = _circle_row_spans(columns, rows)
    else:
        start, stop = _polygon_row_spans(columns, rows, EDGES[shape])
    index = np.int16 if columns.shape[1] < 2**15 else np.int64  # narrow: numpy does 4x more per instruction
    pixel_edges = np.arange(0, columns.shape[1] + 1, supersample, dtype=index)[:, None, None]  # [w + 1, 1, 1]
    # inside samples left of each pixel edge, per row: over the row's ranges, clip(edge, start, stop) - start
    left_of = np.zeros((len(pixel_edges),) + start.shape[1:], dtype=index)  # [w + 1, B, H]
    for begin, end in zip(start.astype(index), stop.astype(index)):  # the K ranges of each row
        left_of += np.minimum(np.maximum(pixel_edges, begin), end) - begin
    per_row = np.diff(left_of, axis=0)  # [w, B, H]: inside samples per pixel and sample row
    per_pixel = sum(per_row[..., j::supersample] for j in range(supersample))  # [w, B, h]
    return per_pixel.transpose(1, 2, 0)


@functools.lru_cache(maxsize=8)
def _blend_tables(supersample: int) -> np.ndarray:
    """[colour, background, covered samples 0..supersample^2, 3] uint8: the blend in float32, rounded."""
    coverage = np.arange(supersample * supersample + 1, dtype=np.float32)[:, None] / np.float32(supersample**2)
    backs = np.array(list(BACKGROUNDS.values()), dtype=np.float32)[None, :, None, :]
    fronts = np.array(list(COLOURS.values()), dtype=np.float32)[:, None, None, :]
    return np.rint(backs * (1.0 - coverage) + fronts * coverage).astype(np.uint8)


def _sample_grid(centre: np.ndarray, radius: np.ndarray, resolution: int, supersample: int):
    """Pixel span [low, high) of each item's box along one axis, and its sample positions in shape
    units [B, S] (+inf past the item's own box; S covers the batch's largest box)."""
    low = np.maximum(0, np.floor((centre - radius) * resolution).astype(int))
    high = np.minimum(resolution, np.ceil((centre + radius) * resolution).astype(int))
    size = int((high - low).max()) * supersample
    index = low[:, None] * supersample + np.arange(size)
    positions = ((index + 0.5) / (resolution * supersample) - centre[:, None]) / radius[:, None]
    positions[np.arange(size) >= (high - low)[:, None] * supersample] = np.inf
    return low, high, positions


class _CoverageMemo:
    """Coverage boxes of the geometries drawn so far at one resolution, up to `limit_bytes`.

    Colour and background only choose a blend table, so the 235,200 tuples share 14,700
    geometries (shape, size, position, jitter). A 60k-image build draws most geometries about
    four times; an item whose geometry is kept costs about half as much to draw (at 32 px)."""

    def __init__(self, limit_bytes: int):
        self.boxes: dict[tuple, tuple[int, int, np.ndarray]] = {}
        self.free_bytes = limit_bytes

    def keep(self, key: tuple, box: tuple[int, int, np.ndarray]) -> None:
        if box[2].nbytes <= self.free_bytes:
            self.boxes[key] = box
            self.free_bytes -= box[2].nbytes


MEMO_BYTES = 64 * 2**20  # per resolution and process: every geometry up to about 170 px (2.4 MB at 32 px)


@functools.lru_cache(maxsize=4)
def _coverage_memo(resolution: int, supersample: int) -> _CoverageMemo:
    return _CoverageMemo(MEMO_BYTES)


def clear_coverage_memo() -> None:
    """Forget the memoised coverage (a benchmark's cold start; tests of the memo)."""
    _coverage_memo.cache_clear()


def _geometry(attributes: dict) -> tuple:
    return (
        attributes["shape"],
        attributes["size"],
        attributes["position"],
        tuple(attributes.get("offset", (0.0, 0.0))),
        attributes.get("scale", 1.0),
    )


def _coverage_boxes(geometries: list[tuple], resolution: int, supersample: int) -> list[tuple[int, int, np.ndarray]]:
    """(top, left, counts [h, w] uint8) of each geometry's bounding box: how many of a pixel's
    supersample^2 samples the shape covers."""
    cx, cy = np.array(
        [(POSITIONS[position][0] + dx, POSITIONS[position][1] + dy) for _, _, position, (dx, dy), _ in geometries]
    ).T
    radius = np.array([SIZES[size] * scale for _, size, _, _, scale in geometries])
    x0, x1, columns = _sample_grid(cx, radius, resolution, supersample)
    y0, y1, rows = _sample_grid(cy, radius, resolution, supersample)
    kinds = np.array([SHAPES.index(g[0]) for g in geometries])
    counts = np.zeros((len(geometries), rows.shape[1] // supersample, columns.shape[1] // supersample), dtype=np.uint8)
    for k, shape in enumerate(SHAPES):
        members = np.flatnonzero(kinds == k)
        if len(members):
            counts[members] = _coverage_counts(shape, columns[members], rows[members], supersample)
    return [
        (top, left, box[: bottom - top, : right - left].copy())
        for box, top, left, bottom, right in zip(counts, y0.tolist(), x0.tolist(), y1.tolist(), x1.tolist())
    ]


def render_batch(attributes: list[dict], resolution: int, supersample: int = 4) -> np.ndarray:
    """Draw items as uint8 [B, resolution, resolution, 3], anti-aliased by supersampling.

    A pixel's colour is one of the few blends of its shape and background colours, chosen by
    how many of its samples the shape covers; those counts are computed once per geometry
    (only inside its bounding box, per shape kind across the batch) and kept in a memo."""
    if supersample**2 > 255:
        raise ValueError(f"supersample must be at most 15 (coverage counts are uint8); got {supersample}")
    memo = _coverage_memo(resolution, supersample)
    geometries = [_geometry(a) for a in attributes]
    missing = list(dict.fromkeys(g for g in geometries if g not in memo.boxes))
    computed = dict(zip(missing, _coverage_boxes(missing, resolution, supersample))) if missing else {}
    for key, box in computed.items():
        memo.keep(key, box)
    counts = np.zeros((len(attributes), resolution, resolution), dtype=np.uint8)  # 0 covered: background
    for i, geometry in enumerate(geometries):
        top, left, box = computed.get(geometry) or memo.boxes[geometry]
        counts[i, top : top + box.shape[0], left : left + box.shape[1]] = box
    colours = [VOCABULARIES["colour"].index(a["colour"]) for a in attributes]
    backgrounds = [VOCABULARIES["background"].index(a["background"]) for a in attributes]
    tables = _blend_tables(supersample)[colours, backgrounds]  # [B, samples + 1, 3]
    first = tables.shape[1] * np.arange(len(attributes))[:, None, None]  # each item's own table
    return np.take(tables.reshape(-1, 3), np.add(counts, first, dtype=np.intp), axis=0)


def render(attributes: dict, resolution: int, supersample: int = 4) -> np.ndarray:
    """Draw one item as uint8 (resolution, resolution, 3) (a batch of one: `render_batch`)."""
    return render_batch([attributes], resolution, supersample)[0]


# ---------------------------------------------------------------------------------------
# The dataset


def _item_id(number: int) -> str:
    return f"shapes-{number}"


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
                f"shapes split {split!r} has {len(pool)} distinct images; size must be 1..{len(pool)}, got {size}"
            )
        self.resolution, self.size, self.seed, self.split = resolution, size, seed, split
        self.supersample = supersample
        self._tuples = pool[:size]
        self.skipped: list[tuple[str, str]] = []  # procedural: nothing is ever skipped

    def __len__(self) -> int:
        return self.size

    def _number(self, index: int) -> int:
        return self._numbers([index])[0]

    def _numbers(self, indices) -> list[int]:
        """Tuple numbers of indices (negative ones count from the end), all checked at once."""
        indices = np.asarray(indices)
        if indices.size == 0:
            return []
        if indices.dtype.kind not in "iu":
            raise TypeError(f"shapes indices must be integers; got {indices.dtype} ({indices[:3].tolist()}...)")
        if not (-self.size <= indices.min() and indices.max() < self.size):
            bad = indices[(indices < -self.size) | (indices >= self.size)][0]
            raise IndexError(f"index {bad} out of range for shapes {self.split} of size {self.size}")
        return self._tuples[indices].tolist()

    def attributes(self, index: int) -> dict:
        """Attributes of item `index` without rendering it."""
        return tuple_attributes(self._number(index))

    def item_id(self, index: int) -> str:
        """Named by tuple number, so the same image has the same id in every split."""
        return _item_id(self._number(index))

    def __getitem__(self, index: int) -> Item:
        return self.read_batch([index])[0]

    def read_batch(self, indices) -> list[Item]:
        """dataset[i] for each index, rendered as one batch (several times faster per item)."""
        numbers = self._numbers(indices)
        attributes = tuples_attributes(numbers)
        images = render_batch(attributes, self.resolution, self.supersample)
        return [
            Item(item_id=_item_id(n), image=image, captions=captions_for(a), path=None, attributes=a)
            for n, image, a in zip(numbers, images, attributes)
        ]

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
                "jitter_variants": int(np.prod(SPACE_DIMS[len(ATTRIBUTE_NAMES) :])),
                **{name: int(len(pool)) for name, pool in pools.items()},
            },
        }

    def fingerprint(self) -> str:
        spec = {
            "kind": self.kind,
            "render_version": RENDER_VERSION,
            "resolution": self.resolution,
            "size": self.size,
            "seed": self.seed,
            "split": self.split,
            "supersample": self.supersample,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def build_shapes(
    root: str | None, resolution: int, size: int = 60000, seed: int = 0, split: str = "train"
) -> ShapesDataset:
    """Registry entry: Captioned Shapes is procedural, so it has no root."""
    if root is not None:
        raise ValueError(f"the shapes dataset is procedural and reads no files; root must be None, got {root!r}")
    return ShapesDataset(resolution=resolution, size=size, seed=seed, split=split)
