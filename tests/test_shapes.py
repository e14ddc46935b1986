"""Captioned Shapes: determinism, distinctness, the zero-shot split, captions, and pixels
that actually show the attributes the captions name."""

import hashlib

import numpy as np
import pytest

from lafite_core.config import DataConfig
from lafite_core.data import DATASETS, build_dataset, dataset_from_config, shapes
from lafite_core.data.shapes import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    COLOURS,
    HELDOUT_COMBINATIONS,
    POSITION_PHRASES,
    POSITIONS,
    SIZES,
    ShapesDataset,
    caption_for,
    class_prompts,
    combination_prompts,
    render,
    render_batch,
)


def test_registered_and_built_from_config():
    kinds = {"shapes", "image_folder", "coco", "cub", "ln_coco", "mm_celeba_hq", "fashion_mnist"}
    assert kinds <= set(DATASETS.names())
    ds = dataset_from_config(DataConfig(kind="shapes", resolution=32, size=50, seed=3, split="test"))
    assert isinstance(ds, ShapesDataset) and len(ds) == 50 and ds.split == "test" and ds.seed == 3
    assert ds.skipped == []
    with pytest.raises(ValueError, match="procedural"):
        build_dataset("shapes", "/some/folder", 32)


@pytest.mark.parametrize("resolution", [32, 64])
def test_items_have_resolution_and_captions(resolution):
    ds = build_dataset("shapes", None, resolution, size=20)
    for i in range(len(ds)):
        item = ds[i]
        assert item.image.shape == (resolution, resolution, 3) and item.image.dtype == np.uint8
        assert len(item.captions) == len(CAPTION_TEMPLATES) >= 4
        assert len(set(item.captions)) == len(item.captions)
        assert item.item_id == ds.item_id(i) and item.attributes == ds.attributes(i)


def test_same_seed_same_pixels_different_seed_different_stream():
    a, b = ShapesDataset(32, size=100, seed=7), ShapesDataset(32, size=100, seed=7)
    for i in (0, 1, 50, 99, -1):
        assert np.array_equal(a[i].image, b[i].image) and a[i].captions == b[i].captions
    other = ShapesDataset(32, size=100, seed=8)
    assert [a.item_id(i) for i in range(100)] != [other.item_id(i) for i in range(100)]


def test_distinct_images_and_space_size():
    ds = ShapesDataset(32, size=60000)
    meta = ds.metadata()["counts"]
    assert meta["train"] >= 50_000
    assert meta["attribute_combinations"] * meta["jitter_variants"] == meta["all"] == shapes.SPACE_SIZE
    assert meta["train"] + meta["test"] + meta["heldout"] == meta["all"]
    # every index of the split is a different tuple of the space...
    assert len(set(int(t) for t in ds._tuples)) == len(ds)
    # ...and different tuples render to different pixels (a sample of 2000 items)
    indices = np.random.default_rng(0).choice(len(ds), size=2000, replace=False)
    digests = {hashlib.blake2b(ds[int(i)].image.tobytes(), digest_size=16).digest() for i in indices}
    assert len(digests) == 2000


def test_heldout_split_property():
    train = ShapesDataset(32, size=ShapesDataset(32, size=1).metadata()["counts"]["train"])
    held = set(HELDOUT_COMBINATIONS)
    pairs = {(a["shape"], a["colour"]) for a in (train.attributes(i) for i in range(len(train)))}
    assert not pairs & held
    # every shape and every colour still appears in training, in other pairs
    assert {s for s, _ in pairs} == set(shapes.SHAPES) and {c for _, c in pairs} == set(COLOURS)
    heldout = ShapesDataset(32, size=3000, split="heldout")
    seen = {(heldout.attributes(i)["shape"], heldout.attributes(i)["colour"]) for i in range(len(heldout))}
    assert seen == held


def test_test_split_is_seen_combinations_but_new_images():
    meta = ShapesDataset(32, size=1).metadata()["counts"]
    train = ShapesDataset(32, size=meta["train"])
    test = ShapesDataset(32, size=meta["test"], split="test")
    train_ids = {train.item_id(i) for i in range(len(train))}
    test_ids = {test.item_id(i) for i in range(len(test))}
    assert not train_ids & test_ids
    pairs = {(a["shape"], a["colour"]) for a in (test.attributes(i) for i in range(len(test)))}
    assert not pairs & set(HELDOUT_COMBINATIONS)


def test_size_larger_than_split_is_an_error():
    with pytest.raises(ValueError, match="heldout.*29400"):
        ShapesDataset(32, size=60000, split="heldout")
    with pytest.raises(ValueError, match="split must be one of"):
        ShapesDataset(32, split="validation")
    small = ShapesDataset(32, size=5)
    with pytest.raises(IndexError, match="index 5 out of range"):
        small[5]
    with pytest.raises(IndexError, match="index -6 out of range"):
        small.read_batch([0, -6, 1])
    with pytest.raises(TypeError, match="integers"):
        small.read_batch([0.5])
    assert small[-1].item_id == small.read_batch([4])[0].item_id


def test_long_caption_names_every_attribute():
    ds = ShapesDataset(32, size=200)
    for i in range(len(ds)):
        a = ds.attributes(i)
        long = caption_for(a, 0)
        if i < 5:
            assert ds[i].captions[0] == long
        for word in (a["shape"], a["colour"], a["size"], a["background"], POSITION_PHRASES[a["position"]][0]):
            assert word in long
    example = {"shape": "triangle", "colour": "red", "size": "small", "position": "top left", "background": "black"}
    assert caption_for(example, 0) == "a small red triangle in the top left corner on a black background"
    assert caption_for(example, 1) == "red triangle, top left"


def test_prompts_for_classification():
    assert class_prompts("colour")["red"] == "a red shape"
    assert set(class_prompts("position")) == set(POSITIONS)
    with pytest.raises(KeyError, match="known"):
        class_prompts("texture")
    held = combination_prompts(which="heldout")
    assert len(held) == len(HELDOUT_COMBINATIONS) * len(SIZES) * len(POSITIONS) * len(BACKGROUNDS)
    assert all((a["shape"], a["colour"]) in HELDOUT_COMBINATIONS for a, _ in held)
    assert len(combination_prompts(which="seen")) + len(held) == len(combination_prompts())


def test_metadata_documents_split():
    meta = ShapesDataset(32, size=10, split="heldout").metadata()
    assert meta["split"] == "heldout" and meta["heldout_combinations"] == [list(p) for p in HELDOUT_COMBINATIONS]
    assert meta["vocabularies"]["colour"] == list(COLOURS) and len(meta["vocabularies"]["shape"]) >= 5


def test_fingerprint_stable_and_sensitive():
    fp = ShapesDataset(32, size=100).fingerprint()
    assert fp == ShapesDataset(32, size=100).fingerprint()
    for changed in (
        ShapesDataset(64, size=100),
        ShapesDataset(32, size=101),
        ShapesDataset(32, size=100, seed=1),
        ShapesDataset(32, size=100, split="test"),
    ):
        assert changed.fingerprint() != fp


def _attrs(**kw):
    base = {"shape": "square", "colour": "red", "size": "small", "position": "center", "background": "black"}
    return {**base, **kw}


@pytest.mark.parametrize("resolution", [32, 64])
def test_pixels_show_the_attributes(resolution):
    """Colour at the shape centre, background in the far corner, mass in the named quadrant,
    large covers more pixels than small."""
    for position, (cx, cy) in POSITIONS.items():
        for background, bg_rgb in BACKGROUNDS.items():
            img = render(_attrs(position=position, background=background, colour="cyan"), resolution)
            px = img[int(cy * resolution), int(cx * resolution)]
            assert tuple(px) == COLOURS["cyan"]
            far = img[-1 if cy < 0.5 else 0, -1 if cx < 0.5 else 0]
            assert tuple(far) == bg_rgb
            ys, xs = np.nonzero(np.any(img != np.array(bg_rgb, dtype=np.uint8), axis=-1))
            assert abs(xs.mean() / resolution - cx) < 0.05 and abs(ys.mean() / resolution - cy) < 0.05
    area = {s: np.any(render(_attrs(size=s), resolution) != 0, axis=-1).sum() for s in SIZES}
    assert area["large"] > 2 * area["small"]


def test_shapes_are_different_outlines():
    masks = {s: np.any(render(_attrs(shape=s, size="large"), 64) != 0, axis=-1) for s in shapes.SHAPES}
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (masks[a] ^ masks[b]).sum() > 40, (a, b)


def test_antialiased_edges():
    img = render(_attrs(shape="circle", size="large"), 32)
    red = img[..., 0]
    assert ((red > 0) & (red < COLOURS["red"][0])).any()  # partial coverage on the rim


# sha256 over renders of every 997th tuple of the space, made by the first (per-sample even-odd)
# renderer: the faster scanline renderer must give the same pixels, or RENDER_VERSION must change
# (the shipped encoder and every cached embedding were made from these pixels)
RENDER_V1_DIGESTS = {
    16: "df66974165e13160fa96d4ac855f69a23ebc89a8bf0a0cadbfb7459a38ffcd85",
    32: "e7fae0a0720100695d202fffb569bac82b0dd11083b9bd44defa1206479e97cd",
    64: "9aff47de594040d9b0c12f13e31d62b3924666be25ff9daf7c629eb0396de838",
}


@pytest.mark.parametrize("resolution", sorted(RENDER_V1_DIGESTS))
def test_pixels_are_those_of_render_version_1(resolution):
    assert shapes.RENDER_VERSION == 1
    digest = hashlib.sha256()
    for number in range(0, shapes.SPACE_SIZE, 997):
        digest.update(render(shapes.tuple_attributes(number), resolution).tobytes())
    assert digest.hexdigest() == RENDER_V1_DIGESTS[resolution]


def _inside_by_brute_force(x: float, y: float, outline) -> bool:
    """Even-odd rule for one point: count edges crossed by the ray to its right."""
    inside = False
    for (x1, y1), (x2, y2) in zip(outline, outline[1:] + outline[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_coverage_counts_agree_with_a_point_by_point_count(shape):
    supersample, pixels = 3, 9
    samples = (np.arange(pixels * supersample) + 0.5) / (pixels * supersample) * 2.4 - 1.2  # past the outline
    rows = samples + 0.013  # off-centre, so rows and columns differ
    counts = shapes._coverage_counts(shape, samples[None], rows[None], supersample)[0]  # a batch of one
    expected = np.zeros((pixels, pixels), dtype=int)
    for i, y in enumerate(rows):
        for j, x in enumerate(samples):
            hit = x * x + y * y <= 1.0 if shape == "circle" else _inside_by_brute_force(x, y, shapes.POLYGONS[shape])
            expected[i // supersample, j // supersample] += hit
    assert counts.shape == (pixels, pixels)
    np.testing.assert_array_equal(counts, expected)
    assert 0 < counts.sum() < (pixels * supersample) ** 2 and counts.max() == supersample**2


def test_a_batch_renders_and_reads_as_its_items_one_by_one():
    data = ShapesDataset(resolution=32, size=300, seed=2, split="train")
    batch = data.read_batch(range(40, 140))  # every shape kind, both backgrounds, boxes of several sizes
    assert {item.attributes["shape"] for item in batch} == set(shapes.SHAPES)
    for index, item in zip(range(40, 140), batch):
        alone = data[index]
        np.testing.assert_array_equal(item.image, alone.image)
        np.testing.assert_array_equal(item.image, render(item.attributes, 32))
        assert (item.item_id, item.captions, item.attributes) == (alone.item_id, alone.captions, alone.attributes)
    assert data.read_batch([]) == []


def test_memoised_coverage_gives_the_pixels_of_a_fresh_render(monkeypatch):
    """The memo keeps coverage per geometry; colour and background must still come from each item,
    and a full memo (or none) must not change a pixel."""
    data = ShapesDataset(resolution=32, size=400, seed=5, split="train")
    numbers = [data._number(i) for i in range(400)]
    attributes = shapes.tuples_attributes(numbers)
    # the same geometry in every colour on both backgrounds: one memo entry read 16 times
    recoloured = [
        {**attributes[0], "colour": colour, "background": background}
        for colour in shapes.COLOURS
        for background in shapes.BACKGROUNDS
    ]
    batch = attributes + recoloured

    shapes.clear_coverage_memo()
    first = render_batch(batch, 32)  # fills the memo (and reads it within the batch)
    again = render_batch(batch, 32)  # every geometry from the memo
    np.testing.assert_array_equal(first, again)
    one_by_one = []
    for a in batch:
        shapes.clear_coverage_memo()
        one_by_one.append(render(a, 32))
    np.testing.assert_array_equal(first, np.stack(one_by_one))
    for a, image in zip(recoloured, first[len(attributes) :]):  # each shows its own colours
        assert (image == shapes.COLOURS[a["colour"]]).all(axis=-1).any()
        assert tuple(image[0, 0]) == shapes.BACKGROUNDS[a["background"]]

    monkeypatch.setattr(shapes, "MEMO_BYTES", 3000)  # room for a few boxes only
    shapes.clear_coverage_memo()
    np.testing.assert_array_equal(render_batch(batch, 32), first)
    memo = shapes._coverage_memo(32, 4)
    assert 0 < len(memo.boxes) < 20 and 0 <= memo.free_bytes < 3000
    np.testing.assert_array_equal(render_batch(batch, 32), first)
    shapes.clear_coverage_memo()
    with pytest.raises(ValueError, match="supersample must be at most 15"):
        render(attributes[0], 32, supersample=16)  # 256 samples per pixel: counts overflow uint8


def test_count_below_is_searchsorted_for_a_whole_batch():
    rng = np.random.default_rng(0)
    count, width = 50, 40
    finite = rng.integers(1, width + 1, count)
    start, step = rng.uniform(-2, 0, count), rng.uniform(0.01, 0.2, count)
    columns = start[:, None] + step[:, None] * np.arange(width)
    columns[np.arange(width) >= finite[:, None]] = np.inf
    values = rng.uniform(-3, 5, (count, 7, 3))
    values[:, 0, 0] = columns[:, 0]  # ties with a column: searchsorted counts only those strictly below
    values[:, 1, 1] = np.inf  # no crossing
    values[:, 2, 2] = -10.0
    values[:, 3, 0] = columns[np.arange(count), finite // 2]
    expected = np.stack([np.searchsorted(c, v.ravel()).reshape(v.shape) for c, v in zip(columns, values)])
    np.testing.assert_array_equal(shapes._count_below(columns, values), expected)
