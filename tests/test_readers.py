"""Readers on small fixtures written in each dataset's real on-disk format, image
conversion (grey, RGBA, centre crop), and every bad-input case: a clear error naming the
file, or (skip_bad=True) a skip listed in ds.skipped."""

import dataclasses
import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lafite_core.config import DataConfig
from lafite_core.data import (
    AnnotationError,
    CaptionReadError,
    EmptyDatasetError,
    ImageReadError,
    build_dataset,
    dataset_from_config,
    load_image,
)
from lafite_core.data.readers import FASHION_MNIST_ROOT, read_idx

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def solid(path: Path, colour, size=(24, 24), fmt=None, mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format=fmt)
    return path


def bands(path: Path, colours, horizontal=True, band=30, fmt=None) -> Path:
    """Three bands side by side (horizontal=True: a wide image) or stacked (a tall one)."""
    blocks = [np.full((band, band, 3), c, dtype=np.uint8) for c in colours]
    array = np.concatenate(blocks, axis=1 if horizontal else 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def write_lines(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return path


def truncated_jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ---------------------------------------------------------------------------------------
# Image conversion


def test_centre_crop_keeps_the_middle_of_wide_and_tall_images(tmp_path):
    wide = bands(tmp_path / "wide.png", [RED, GREEN, BLUE], horizontal=True)
    tall = bands(tmp_path / "tall.png", [BLUE, RED, GREEN], horizontal=False)
    for path, middle in ((wide, GREEN), (tall, RED)):
        image = load_image(path, 16)
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - middle).max() <= 1


def test_square_image_is_only_resized(tmp_path):
    array = np.zeros((40, 40, 3), dtype=np.uint8)
    array[:, :20] = RED
    array[:, 20:] = BLUE
    Image.fromarray(array).save(tmp_path / "half.png")
    image = load_image(tmp_path / "half.png", 20)
    assert np.abs(image[:, :8].astype(int) - RED).max() <= 2
    assert np.abs(image[:, 12:].astype(int) - BLUE).max() <= 2


def test_grey_palette_and_rgba_become_rgb(tmp_path):
    grey = load_image(solid(tmp_path / "grey.png", 77, mode="L"), 8)
    assert grey.shape == (8, 8, 3) and (grey == 77).all()
    opaque = load_image(solid(tmp_path / "opaque.png", (10, 20, 30, 255), mode="RGBA"), 8)
    assert (opaque == (10, 20, 30)).all()
    clear = load_image(solid(tmp_path / "clear.png", (10, 20, 30, 0), mode="RGBA"), 8)
    assert (clear == 255).all()  # transparent -> composited over white
    grey_alpha = load_image(solid(tmp_path / "la.png", (0, 128), mode="LA"), 8)
    assert np.abs(grey_alpha.astype(int) - 127).max() <= 1  # black at 50% over white
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 0, 200, 100] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert (load_image(tmp_path / "palette.png", 8) == (0, 200, 100)).all()
    deep = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    deep.save(tmp_path / "deep.png")
    assert (load_image(tmp_path / "deep.png", 8) == 255).all()  # 16-bit white stays white


def test_jpeg_and_webp_are_read(tmp_path):
    for name, fmt in (("a.jpg", "JPEG"), ("b.webp", "WEBP")):
        image = load_image(solid(tmp_path / name, BLUE, fmt=fmt), 12)
        assert image.shape == (12, 12, 3) and np.abs(image.astype(int) - BLUE).max() <= 8


# ---------------------------------------------------------------------------------------
# Image folder


def make_folder(root: Path) -> Path:
    solid(root / "a.png", RED)
    write_lines(root / "a.txt", ["a red square", "", "  red   thing  "])
    solid(root / "sub" / "b.jpg", GREEN, fmt="JPEG")
    solid(root / "sub" / "deeper" / "c.WEBP", BLUE, fmt="WEBP")
    (root / "notes.md").write_text("not an image")
    return root


def test_image_folder_recursive_with_sidecar_captions(tmp_path):
    root = make_folder(tmp_path / "folder")
    ds = build_dataset("image_folder", str(root), 16)
    assert len(ds) == 3
    assert [ds[i].item_id for i in range(3)] == ["a", "sub/b", "sub/deeper/c"]
    assert ds[0].captions == ["a red square", "red thing"]
    assert ds[1].captions == [] and ds[2].captions == []
    assert ds[0].path == str(root / "a.png") and ds[0].attributes is None
    for i, colour in enumerate((RED, GREEN, BLUE)):
        assert ds[i].image.shape == (16, 16, 3)
        assert np.abs(ds[i].image.astype(int) - colour).max() <= 8
    assert ds.skipped == []


def test_fingerprint_follows_files_and_captions(tmp_path):
    root = make_folder(tmp_path / "folder")
    fp = build_dataset("image_folder", root, 16).fingerprint()
    assert fp == build_dataset("image_folder", root, 16).fingerprint()
    assert build_dataset("image_folder", root, 32).fingerprint() != fp
    write_lines(root / "a.txt", ["a different caption"])
    fp2 = build_dataset("image_folder", root, 16).fingerprint()
    assert fp2 != fp
    solid(root / "d.png", RED)
    assert build_dataset("image_folder", root, 16).fingerprint() != fp2


# ---------------------------------------------------------------------------------------
# MS-COCO


def make_coco(root: Path, split="train", year="2014") -> Path:
    images = [
        {"id": 9, "file_name": f"COCO_{split}{year}_000000000009.jpg", "width": 90, "height": 30},
        {"id": 25, "file_name": f"COCO_{split}{year}_000000000025.jpg", "width": 24, "height": 24},
    ]
    annotations = [
        {"image_id": 25, "id": 1, "caption": "A giraffe standing  near trees.\n"},
        {"image_id": 9, "id": 2, "caption": "A plate of food."},
        {"image_id": 9, "id": 3, "caption": "Some broccoli on a plate."},
    ]
    ann = root / "annotations" / f"captions_{split}{year}.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    folder = root / f"{split}{year}"
    bands(folder / images[0]["file_name"], [RED, GREEN, BLUE], fmt="JPEG")
    solid(folder / images[1]["file_name"], BLUE, fmt="JPEG")
    return root


def test_coco_captions(tmp_path):
    root = make_coco(tmp_path / "coco")
    ds = build_dataset("coco", root, 16, split="train")
    assert len(ds) == 2 and [ds[i].item_id for i in range(2)] == ["9", "25"]
    assert ds[0].captions == ["A plate of food.", "Some broccoli on a plate."]
    assert ds[1].captions == ["A giraffe standing near trees."]
    middle = ds[0].image[3:-3, 3:-3].astype(int)  # centre crop of the wide image, JPEG edges aside
    assert np.abs(middle - GREEN).max() <= 12
    val = make_coco(tmp_path / "coco_val", split="val")
    assert len(build_dataset("coco", val, 16, split="val")) == 2


def test_coco_2017_in_other_places_from_data_config_alone(tmp_path):
    root = make_coco(tmp_path / "coco", split="val", year="2017")
    (root / "annotations" / "captions_val2017.json").rename(root / "captions.json")
    (root / "val2017").rename(root / "pictures")
    cfg = DataConfig(kind="coco", root=str(root), resolution=16, split="val", year=2017)  # as --set reads it
    with pytest.raises(FileNotFoundError, match="captions_val2017.json"):
        dataset_from_config(cfg)
    ds = dataset_from_config(dataclasses.replace(cfg, annotations="captions.json", image_dir="pictures"))
    assert len(ds) == 2 and ds[0].captions == ["A plate of food.", "Some broccoli on a plate."]
    assert ds[0].caption_file == str(root / "captions.json")


def test_coco_bad_annotations_and_missing_image(tmp_path):
    root = make_coco(tmp_path / "coco")
    ann = root / "annotations" / "captions_train2014.json"
    (root / "train2014" / "COCO_train2014_000000000025.jpg").unlink()
    with pytest.raises(ImageReadError, match="COCO_train2014_000000000025.jpg.*does not exist"):
        build_dataset("coco", root, 16)
    ds = build_dataset("coco", root, 16, skip_bad=True)
    assert len(ds) == 1 and "COCO_train2014_000000000025.jpg" in ds.skipped[0][0]
    ann.write_text('{"images": [], "annotations": [')
    with pytest.raises(AnnotationError, match="captions_train2014.json.*not valid JSON"):
        build_dataset("coco", root, 16)
    ann.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(AnnotationError, match="captions_train2014.json.*file_name"):
        build_dataset("coco", root, 16)


# ---------------------------------------------------------------------------------------
# CUB (AttnGAN birds/ layout)

CUB_NAMES = [
    "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18",
    "002.Laysan_Albatross/Laysan_Albatross_0002_1027",
]


def make_cub(root: Path) -> Path:
    cub = root / "CUB_200_2011"
    for n, name in enumerate(CUB_NAMES):
        # a 60x40 image: blue everywhere except a red bird box at x 30..50, y 10..30
        array = np.full((40, 60, 3), BLUE, dtype=np.uint8)
        array[10:30, 30:50] = RED
        (cub / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(cub / "images" / f"{name}.jpg", format="PNG")
        write_lines(root / "text" / f"{name}.txt", [f"bird {n} caption {k}" for k in range(10)])
    write_lines(cub / "images.txt", [f"{i + 1} {name}.jpg" for i, name in enumerate(CUB_NAMES)])
    # box x, y, w, h = 35, 15, 10, 10: centre (40, 20), AttnGAN square side 1.5 * 10 = 15
    write_lines(cub / "bounding_boxes.txt", [f"{i + 1} 35.0 15.0 10.0 10.0" for i in range(len(CUB_NAMES))])
    for split, names in (("train", CUB_NAMES[:1]), ("test", CUB_NAMES[1:])):
        (root / split).mkdir()
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(names, f, protocol=2)
    return root


def test_cub_layout_splits_and_bird_crop(tmp_path):
    root = make_cub(tmp_path / "birds")
    ds = build_dataset("cub", root, 16, split="all")
    assert [ds[i].item_id for i in range(len(ds))] == CUB_NAMES
    item = ds[0]
    assert item.captions == [f"bird 0 caption {k}" for k in range(10)]
    assert item.attributes == {"class": "001.Black_footed_Albatross"}
    assert np.abs(item.image.astype(int) - RED).max() <= 1  # the crop sees only the bird box
    uncropped = build_dataset("cub", root, 16, split="all", bbox_crop=False)[0].image
    assert (np.abs(uncropped.astype(int) - BLUE).max(axis=-1) <= 1).any()  # centre crop shows background
    train, test = build_dataset("cub", root, 16, split="train"), build_dataset("cub", root, 16, split="test")
    assert [train[0].item_id] == CUB_NAMES[:1] and len(train) == 1 and [test[0].item_id] == CUB_NAMES[1:]
    ds_cfg = dataset_from_config(DataConfig(kind="cub", root=str(root), resolution=16, split="test"))
    assert len(ds_cfg) == 1


def test_cub_bad_inputs(tmp_path):
    root = make_cub(tmp_path / "birds")
    caption = root / "text" / f"{CUB_NAMES[1]}.txt"
    caption.unlink()
    with pytest.raises(CaptionReadError, match="Laysan_Albatross_0002_1027.txt does not exist"):
        build_dataset("cub", root, 16)
    ds = build_dataset("cub", root, 16, skip_bad=True)
    assert len(ds) == 1 and ds.skipped[0][0] == str(caption)
    (root / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="bounding_boxes.txt.*bbox_crop=False"):
        build_dataset("cub", root, 16, skip_bad=True)
    (root / "train" / "filenames.pickle").write_bytes(pickle.dumps(Path("x")))
    with pytest.raises(AnnotationError, match="filenames.pickle"):
        build_dataset("cub", root, 16, split="train", bbox_crop=False)


# ---------------------------------------------------------------------------------------
# LN-COCO (localized narratives JSONL)


def narrative(image_id: str, caption: str) -> str:
    return json.dumps(
        {
            "dataset_id": "mscoco_train2017",
            "image_id": image_id,
            "annotator_id": 93,
            "caption": caption,
            "timed_caption": [],
            "traces": [],
            "voice_recording": "coco_train/x.ogg",
        }
    )


def make_ln_coco(root: Path) -> Path:
    write_lines(
        root / "annotations" / "coco_train_localized_narratives-00000-of-00002.jsonl",
        [narrative("139", "In this image we can see a table."), narrative("285", "This is a bear.")],
    )
    write_lines(
        root / "annotations" / "coco_train_localized_narratives-00001-of-00002.jsonl",
        [narrative("139", "There is a  room with chairs.")],
    )
    solid(root / "train2017" / "000000000139.jpg", RED, fmt="JPEG")
    solid(root / "train2017" / "000000000285.jpg", GREEN, fmt="JPEG")
    return root


def test_ln_coco_groups_narratives_across_shards(tmp_path):
    root = make_ln_coco(tmp_path / "ln")
    ds = build_dataset("ln_coco", root, 16)
    assert len(ds) == 2 and ds[0].item_id == "139"
    assert ds[0].captions == ["In this image we can see a table.", "There is a room with chairs."]
    assert ds[1].captions == ["This is a bear."] and ds[1].path.endswith("train2017/000000000285.jpg")


def test_ln_coco_bad_line_names_file_and_line(tmp_path):
    root = make_ln_coco(tmp_path / "ln")
    shard = root / "annotations" / "coco_train_localized_narratives-00001-of-00002.jsonl"
    shard.write_text(narrative("139", "fine") + "\n{\"image_id\": \"1\"}\n")
    with pytest.raises(AnnotationError, match="00001-of-00002.jsonl:2"):
        build_dataset("ln_coco", root, 16)
    with pytest.raises(FileNotFoundError, match="coco_val_localized_narratives"):
        build_dataset("ln_coco", root, 16, split="val")


# ---------------------------------------------------------------------------------------
# MM-CelebA-HQ


def test_mm_celeba_hq_layouts(tmp_path):
    root = tmp_path / "mmceleba"
    for i in (10, 2, 0):
        solid(root / "images" / f"{i}.jpg", GREEN, fmt="JPEG")
        write_lines(root / "text" / f"{i}.txt", [f"face {i} smiles", f"face {i} has hair"])
    ds = build_dataset("mm_celeba_hq", root, 16)
    assert [ds[i].item_id for i in range(3)] == ["0", "2", "10"]  # numeric order
    assert ds[1].captions == ["face 2 smiles", "face 2 has hair"]
    # the released folder names: CelebA-HQ-img/ and text/celeba-caption/
    released = tmp_path / "released"
    solid(released / "CelebA-HQ-img" / "5.jpg", RED, fmt="JPEG")
    write_lines(released / "text" / "celeba-caption" / "5.txt", ["she wears lipstick"])
    (released / "train").mkdir()
    (released / "train" / "filenames.pickle").write_bytes(pickle.dumps(["5"], protocol=2))
    ds = build_dataset("mm_celeba_hq", released, 16, split="train")
    assert len(ds) == 1 and ds[0].captions == ["she wears lipstick"]
    # folders of other names, from DataConfig alone
    (root / "images").rename(root / "faces")
    (root / "text").rename(root / "captions")
    cfg = DataConfig(
        kind="mm_celeba_hq", root=str(root), resolution=16, split="all", image_dir="faces", text_dir="captions"
    )
    assert [item.item_id for item in dataset_from_config(cfg)] == ["0", "2", "10"]


def test_mm_celeba_hq_unreadable_caption(tmp_path):
    root = tmp_path / "mmceleba"
    for i in (0, 1):
        solid(root / "images" / f"{i}.jpg", GREEN, fmt="JPEG")
        write_lines(root / "text" / f"{i}.txt", ["a face"])
    (root / "text" / "1.txt").write_bytes(b"\xff\xfe\xfa broken bytes\n")
    with pytest.raises(CaptionReadError, match=r"1\.txt is not UTF-8"):
        build_dataset("mm_celeba_hq", root, 16)
    ds = build_dataset("mm_celeba_hq", root, 16, skip_bad=True)
    assert len(ds) == 1 and ds.skipped[0][0].endswith("1.txt")


# ---------------------------------------------------------------------------------------
# Fashion-MNIST (IDX)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_idx(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 1, 8, 9], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, gz)
    ds = build_dataset("fashion_mnist", str(tmp_path), 28, split="test")
    assert len(ds) == 5
    item = ds[0]
    assert item.captions[0] == "a photo of a sneaker" and item.attributes == {"label": 7, "class": "sneaker"}
    assert ds[4].captions[0] == "a photo of an ankle boot" and ds[1].captions[1] == "a t-shirt"
    assert item.image.shape == (28, 28, 3) and all((item.image[..., c] == images[0]).all() for c in range(3))
    assert build_dataset("fashion_mnist", str(tmp_path), 32, split="test")[0].image.shape == (32, 32, 3)


def test_fashion_mnist_truncated_or_missing(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 28, 28), dtype=np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(AnnotationError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path)
    gz = tmp_path / "t.gz"
    gz.write_bytes(gzip.compress(b"\x00" * 1000)[:20])
    with pytest.raises(AnnotationError, match="t.gz"):
        read_idx(gz)
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        build_dataset("fashion_mnist", tmp_path, 32)


@pytest.mark.skipif(not Path(FASHION_MNIST_ROOT).is_dir(), reason="Debian package dataset-fashion-mnist absent")
def test_fashion_mnist_debian_package():
    ds = build_dataset("fashion_mnist", None, 32, split="test")
    assert len(ds) == 10_000 and ds[0].image.shape == (32, 32, 3)
    assert ds[0].attributes["class"] == "ankle boot"  # the first test image of Fashion-MNIST


# ---------------------------------------------------------------------------------------
# Bad input in an image folder


def test_corrupt_image_raises_naming_file_or_is_skipped(tmp_path):
    root = tmp_path / "folder"
    solid(root / "good.png", RED)
    bad = corrupt(root / "bad.png")
    ds = build_dataset("image_folder", root, 16)
    with pytest.raises(ImageReadError, match="bad.png"):
        ds[0]  # "bad" sorts first
    ds = build_dataset("image_folder", root, 16, skip_bad=True)
    assert len(ds) == 1 and ds[0].item_id == "good"
    assert ds.skipped[0][0] == str(bad) and "cannot read image" in ds.skipped[0][1]


def test_truncated_jpeg_raises_naming_file_or_is_skipped(tmp_path):
    root = tmp_path / "folder"
    solid(root / "b_good.jpg", RED, fmt="JPEG")
    cut = truncated_jpeg(root / "a_cut.jpg")
    with pytest.raises(ImageReadError, match="a_cut.jpg.*truncated"):
        build_dataset("image_folder", root, 16)[0]
    ds = build_dataset("image_folder", root, 16, skip_bad=True)
    assert [r[0] for r in ds.skipped] == [str(cut)] and len(ds) == 1


def test_unreadable_or_empty_caption_file(tmp_path):
    root = tmp_path / "folder"
    solid(root / "a.png", RED)
    solid(root / "b.png", GREEN)
    (root / "a.txt").write_bytes(b"caf\xe9 au lait\n")  # latin-1, not UTF-8
    with pytest.raises(CaptionReadError, match=r"a\.txt is not UTF-8"):
        build_dataset("image_folder", root, 16)
    (root / "a.txt").write_text("\n  \n")
    with pytest.raises(CaptionReadError, match=r"a\.txt has no captions"):
        build_dataset("image_folder", root, 16)
    ds = build_dataset("image_folder", root, 16, skip_bad=True)
    assert len(ds) == 1 and ds[0].item_id == "b" and ds.skipped[0][0] == str(root / "a.txt")


def test_empty_or_missing_folder_named(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(EmptyDatasetError, match=str(empty)):
        build_dataset("image_folder", empty, 16)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset("image_folder", tmp_path / "nowhere", 16)
    only_bad = tmp_path / "only_bad"
    corrupt(only_bad / "x.png")
    with pytest.raises(EmptyDatasetError, match="only_bad.*1 skipped"):
        build_dataset("image_folder", only_bad, 16, skip_bad=True)
