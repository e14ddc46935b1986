"""Readers for real captioned image data, each in its published on-disk layout.

Every reader lists its items up front (paths, captions, crop boxes) and decodes an image only
when it is indexed, through `images.load_image`, so all datasets share one preprocessing.

Bad input is never papered over. A corrupt image, a missing or unreadable caption file, a
malformed annotation or an empty folder raises an error that names the file. With
`skip_bad=True` the reader instead leaves the item out and lists it in `ds.skipped` as
(path, reason); it then also decodes every image once while listing (slower, but a corrupt
image is found before training starts, not in the middle of it).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import pickle
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lafite_core.data.images import IMAGE_EXTENSIONS, ImageReadError, Item, grey_to_rgb_array, load_image


class CaptionReadError(OSError, ValueError):
    """A caption file is missing, not UTF-8 text, or holds no caption (a ValueError too, so every
    entry point reports it as one `error:` line)."""


class AnnotationError(ValueError):
    """An annotation file (JSON, JSONL, pickle, txt table) does not have the expected format."""


class EmptyDatasetError(FileNotFoundError):
    """A folder or annotation file yields no usable item."""


# ---------------------------------------------------------------------------------------
# Small shared pieces


@dataclass
class Record:
    """What a reader knows about one item before decoding it."""

    item_id: str
    path: Path
    captions: list[str]
    attributes: dict | None = None
    box: tuple[float, float, float, float] | None = None  # crop (left, top, right, bottom)
    caption_file: Path | None = None  # where the captions were read, for messages about them


@dataclass
class Skips:
    """Raise bad-input errors, or (skip_bad=True) record them as (path, reason) and go on."""

    skip_bad: bool
    items: list[tuple[str, str]] = field(default_factory=list)

    def handle(self, path: str | Path, err: Exception) -> None:
        if not self.skip_bad:
            raise type(err)(f"{err}; {SKIP_HINT}") from None
        self.items.append((str(path), str(err)))


SKIP_HINT = "set data.skip_bad=true to leave such items out (they are listed in the cache's report.json)"


def read_captions(path: Path) -> list[str]:
    """One caption per non-empty line; stray U+FFFD marks (which AttnGAN strips from CUB
    captions) become spaces."""
    return read_caption_file(path)[0]


def read_caption_file(path: Path) -> tuple[list[str], int]:
    """(read_captions' captions, how many empty lines between them were left out)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CaptionReadError(f"caption file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise CaptionReadError(f"caption file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise CaptionReadError(f"cannot read caption file {path}: {err.strerror or err}") from None
    lines = [" ".join(line.replace("\ufffd", " ").split()) for line in text.splitlines()]
    captions = [c for c in lines if c]
    if not captions:
        raise CaptionReadError(f"caption file {path} has no captions")
    return captions, len(lines) - len(captions)


def _numeric_first(name: str):
    """Sort key: numeric names by value (2 before 10), then the rest by text."""
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def existing_dir(root: str | Path | None, kind: str) -> Path:
    if root is None:
        raise ValueError(f"dataset {kind!r} needs a root folder")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{kind} root folder {root} does not exist")
    return root


def first_existing(root: Path, candidates: tuple[str, ...], what: str) -> Path:
    """The first of several published layouts that is present under root."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"no {what} folder found; looked for {tried}")


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, in a stable order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class _StringsOnly(pickle.Unpickler):
    """filenames.pickle files are plain lists of names; refuse anything that imports code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a filenames list holds only strings")


def read_filenames_pickle(path: Path) -> list[str]:
    """AttnGAN/TediGAN split lists (`<split>/filenames.pickle`), Python 2 or 3 pickles."""
    try:
        with open(path, "rb") as f:
            names = _StringsOnly(f, encoding="latin1").load()
    except FileNotFoundError:
        raise FileNotFoundError(f"split list {path} does not exist (use split='all' to take every image)") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise AnnotationError(f"{path} is not a pickled list of file names: {err}") from None
    if not isinstance(names, (list, tuple)):
        raise AnnotationError(f"{path} holds a {type(names).__name__}, expected a list of file names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


# ---------------------------------------------------------------------------------------
# The dataset every file reader returns


class FileDataset:
    """Items listed from files; `ds[i]` decodes image i at `resolution`."""

    def __init__(self, kind: str, root: Path, resolution: int, records: list[Record], skips: Skips, options: dict):
        self.kind, self.root, self.resolution, self.options = kind, Path(root), resolution, options
        if skips.skip_bad:
            records = [r for r in records if self._readable(r, skips)]
        self.skipped: list[tuple[str, str]] = skips.items
        if not records:
            note = f" ({len(self.skipped)} skipped, see .skipped)" if self.skipped else ""
            raise EmptyDatasetError(f"{kind} dataset under {self.root} has no usable items{note}")
        self.records = records
        self.empty_caption_lines: list[dict] = []  # [{path, lines}]: said in the cache's report.json

    def _readable(self, record: Record, skips: Skips) -> bool:
        try:
            load_image(record.path, self.resolution, record.box)
            return True
        except ImageReadError as err:
            skips.handle(record.path, err)
            return False

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        r = self.records[index]
        image = load_image(r.path, self.resolution, r.box)
        caption_file = str(r.caption_file) if r.caption_file else None
        return Item(r.item_id, image, list(r.captions), str(r.path), r.attributes, caption_file)

    def fingerprint(self) -> str:
        """Hash of kind, resolution, options, and every item's id, file (relative path and
        size), captions and crop: changes whenever what the dataset yields could change."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.kind, self.resolution, self.options], sort_keys=True, default=str).encode())
        for r in self.records:
            try:
                size = r.path.stat().st_size
            except OSError as err:
                raise ImageReadError(f"cannot read image {r.path}: {err.strerror or err}") from None
            relative = os.path.relpath(r.path, self.root)
            digest.update(json.dumps([r.item_id, relative, size, r.captions, r.box]).encode())
        return digest.hexdigest()


def _require_image(record: Record, skips: Skips, listed_in: Path | None = None) -> bool:
    """Cheap existence check while listing (decoding waits for skip_bad or indexing)."""
    if record.path.is_file():
        return True
    where = f" (listed in {listed_in})" if listed_in else ""
    skips.handle(record.path, ImageReadError(f"image {record.path} does not exist{where}"))
    return False


# ---------------------------------------------------------------------------------------
# Image folder


def read_image_folder(root: str | Path, resolution: int, skip_bad: bool = False) -> FileDataset:
    """Every .png/.jpg/.jpeg/.webp under root (recursive). A sidecar `<name>.txt` next to an
    image holds its captions, one per line; images without one have no captions (fine for
    language-free training)."""
    root = existing_dir(root, "image_folder")
    paths = list_images(root)
    if not paths:
        raise EmptyDatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    skips, records, empty_lines = Skips(skip_bad), [], []
    for path in paths:
        sidecar = path.with_suffix(".txt")
        try:
            captions, empty = read_caption_file(sidecar) if sidecar.exists() else ([], 0)
        except CaptionReadError as err:
            skips.handle(sidecar, err)
            continue
        if empty:
            empty_lines.append({"path": str(sidecar), "lines": empty})
        item_id = path.relative_to(root).with_suffix("").as_posix()
        records.append(Record(item_id, path, captions, caption_file=sidecar if captions else None))
    dataset = FileDataset("image_folder", root, resolution, records, skips, options={})
    dataset.empty_caption_lines = empty_lines
    return dataset


# ---------------------------------------------------------------------------------------
# MS-COCO captions


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path} is not valid JSON: {err}") from None


def read_coco(
    root: str | Path,
    resolution: int,
    split: str = "train",
    year: str = "2014",
    annotations: str | None = None,
    image_dir: str | None = None,
    skip_bad: bool = False,
) -> FileDataset:
    """MS-COCO: `annotations/captions_<split><year>.json` (images[] with id/file_name,
    annotations[] with image_id/caption) and the images in `<split><year>/`. Both paths can
    be given explicitly, relative to root or absolute. Items are ordered by image id."""
    root = existing_dir(root, "coco")
    ann_path = root / (annotations or f"annotations/captions_{split}{year}.json")
    folder = root / (image_dir or f"{split}{year}")
    data = _load_json(ann_path)
    try:
        files = {img["id"]: img["file_name"] for img in data["images"]}
        captions = defaultdict(list)
        for ann in data["annotations"]:
            captions[ann["image_id"]].append(" ".join(str(ann["caption"]).split()))
    except (KeyError, TypeError) as err:
        raise AnnotationError(f"{ann_path} is not a COCO captions file (missing or malformed {err})") from None
    unknown = sorted(set(captions) - set(files), key=str)
    if unknown:
        raise AnnotationError(f"{ann_path}: captions refer to image ids not in images[], e.g. {unknown[0]!r}")
    if not files:
        raise EmptyDatasetError(f"{ann_path} lists no images")
    skips, records = Skips(skip_bad), []
    for image_id in sorted(files, key=lambda i: _numeric_first(str(i))):
        record = Record(str(image_id), folder / files[image_id], captions.get(image_id, []), caption_file=ann_path)
        if _require_image(record, skips, ann_path):
            records.append(record)
    options = {"split": split, "year": year, "annotations": annotations, "image_dir": image_dir}
    return FileDataset("coco", root, resolution, records, skips, options)


# ---------------------------------------------------------------------------------------
# LN-COCO (Localized Narratives on COCO)


def _numbered_lines(path: Path):
    """Non-blank lines of a text file with 1-based numbers; decoding errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, line
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_ln_coco(
    root: str | Path,
    resolution: int,
    split: str = "train",
    annotations: str | None = None,
    image_dir: str | None = None,
    skip_bad: bool = False,
) -> FileDataset:
    """Localized Narratives for COCO: JSON-lines files `coco_<split>_localized_narratives*.jsonl`
    (the train set ships as 4 shards), in root or root/annotations, one narrative per line with
    image_id and caption (plus traces, unused). The images are COCO 2017's, named
    `<split>2017/<image_id as 12 digits>.jpg`. An image narrated twice gets both captions."""
    root = existing_dir(root, "ln_coco")
    pattern = annotations or f"coco_{split}_localized_narratives*.jsonl"
    found = (sorted(glob.glob(str(base / pattern))) for base in (root, root / "annotations"))
    files = [Path(p) for p in next((hits for hits in found if hits), [])]
    if not files:
        raise FileNotFoundError(f"no narratives file matching {pattern} in {root} or {root / 'annotations'}")
    folder = root / (image_dir or f"{split}2017")
    captions: dict[str, list[str]] = {}
    listed_in: dict[str, Path] = {}
    for path in files:
        for number, line in _numbered_lines(path):
            try:
                entry = json.loads(line)
                image_id, caption = str(entry["image_id"]), " ".join(str(entry["caption"]).split())
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise AnnotationError(f"{path}:{number}: not a narrative with image_id and caption ({err})") from None
            captions.setdefault(image_id, []).append(caption)
            listed_in.setdefault(image_id, path)
    if not captions:
        raise EmptyDatasetError(f"narratives files {', '.join(map(str, files))} hold no narrative")
    skips, records = Skips(skip_bad), []
    for image_id, caps in captions.items():
        name = f"{int(image_id):012d}.jpg" if image_id.isdigit() else f"{image_id}.jpg"
        record = Record(image_id, folder / name, caps, caption_file=listed_in[image_id])
        if _require_image(record, skips, listed_in[image_id]):
            records.append(record)
    options = {"split": split, "annotations": [p.name for p in files]}
    return FileDataset("ln_coco", root, resolution, records, skips, options)


# ---------------------------------------------------------------------------------------
# Datasets of paired files: <images>/<name>.<ext> + <text>/<name>.txt


def _paired_records(
    names,
    images: dict[str, Path],
    image_dir: Path,
    text_dir: Path,
    skips: Skips,
    attributes_for=lambda name: None,
    box_for=lambda name: None,
) -> list[Record]:
    """Records for names that have both an image (`images`, found under image_dir) and a
    caption file `text_dir/<name>.txt`."""
    records = []
    for name in names:
        image = images.get(name)
        if image is None:
            skips.handle(image_dir / name, ImageReadError(f"no image for {name!r} in {image_dir}"))
            continue
        try:
            captions = read_captions(text_dir / f"{name}.txt")
        except CaptionReadError as err:
            skips.handle(text_dir / f"{name}.txt", err)
            continue
        records.append(Record(name, image, captions, attributes_for(name), box_for(name), text_dir / f"{name}.txt"))
    return records


def _cub_boxes(cub_dir: Path) -> dict[str, tuple[float, float, float, float]]:
    """AttnGAN's bird crop: a square of side 1.5 x max(w, h) around each bounding box centre
    (from CUB_200_2011/images.txt + bounding_boxes.txt), clipped to the image when loaded."""
    tables = {}
    for name in ("images.txt", "bounding_boxes.txt"):
        path = cub_dir / name
        try:
            rows = [line.split() for line in path.read_text().splitlines()]
            tables[name] = {int(cols[0]): cols[1:] for cols in rows if cols}
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path} does not exist (needed for bbox_crop=True; pass bbox_crop=False to centre-crop)"
            ) from None
        except (ValueError, IndexError) as err:
            raise AnnotationError(f"{path} is not a CUB table of '<id> <values>' lines: {err}") from None
    boxes = {}
    for image_id, (relative,) in tables["images.txt"].items():
        try:
            x, y, w, h = map(float, tables["bounding_boxes.txt"][image_id])
        except (KeyError, ValueError) as err:
            raise AnnotationError(
                f"{cub_dir / 'bounding_boxes.txt'}: no valid box for image {image_id} ({err})"
            ) from None
        r = 0.75 * max(w, h)
        cx, cy = x + w / 2, y + h / 2
        boxes[relative.rsplit(".", 1)[0]] = (cx - r, cy - r, cx + r, cy + r)
    return boxes


def read_cub(
    root: str | Path, resolution: int, split: str = "all", bbox_crop: bool = True, skip_bad: bool = False
) -> FileDataset:
    """CUB-200-2011 with the captions of Reed et al. in AttnGAN's `birds/` layout:
    `CUB_200_2011/images/<class>/<name>.jpg` and `text/<class>/<name>.txt` (10 captions,
    one per line; `text_c10/` is accepted too). split "train"/"test" reads AttnGAN's
    `<split>/filenames.pickle`; "all" takes every image. bbox_crop crops around the bird
    as AttnGAN does."""
    root = existing_dir(root, "cub")
    image_dir = first_existing(root, ("CUB_200_2011/images", "images"), "CUB image")
    text_dir = first_existing(root, ("text", "text_c10"), "CUB caption")
    by_name = {p.relative_to(image_dir).with_suffix("").as_posix(): p for p in list_images(image_dir)}
    if split == "all":
        names = list(by_name)
    else:
        names = read_filenames_pickle(root / split / "filenames.pickle")
    if not names:
        raise EmptyDatasetError(f"no CUB images found under {image_dir}")
    boxes = _cub_boxes(image_dir.parent) if bbox_crop else {}
    for name in names:
        if bbox_crop and name not in boxes:
            raise AnnotationError(f"{image_dir.parent / 'images.txt'} has no entry for {name!r}")
    skips = Skips(skip_bad)
    records = _paired_records(
        names,
        images=by_name,
        image_dir=image_dir,
        text_dir=text_dir,
        skips=skips,
        attributes_for=lambda name: {"class": name.split("/")[0]},
        box_for=boxes.get,
    )
    return FileDataset("cub", root, resolution, records, skips, {"split": split, "bbox_crop": bbox_crop})


def read_mm_celeba_hq(
    root: str | Path,
    resolution: int,
    split: str = "all",
    image_dir: str | None = None,
    text_dir: str | None = None,
    skip_bad: bool = False,
) -> FileDataset:
    """Multi-Modal-CelebA-HQ: `images/<id>.jpg` + `text/<id>.txt` (10 captions per face).
    The released folders are also found as `image/images` or `CelebA-HQ-img` and
    `text/celeba-caption`. split "train"/"test" reads `<split>/filenames.pickle`."""
    root = existing_dir(root, "mm_celeba_hq")
    images_at = (
        root / image_dir
        if image_dir
        else first_existing(root, ("images", "image/images", "CelebA-HQ-img", "image"), "MM-CelebA-HQ image")
    )
    texts_at = (
        root / text_dir
        if text_dir
        else first_existing(root, ("text/celeba-caption", "celeba-caption", "text"), "MM-CelebA-HQ caption")
    )
    by_id = {p.stem: p for p in list_images(images_at)}
    if split == "all":
        names = sorted(by_id, key=_numeric_first)
    else:
        names = [Path(n).stem for n in read_filenames_pickle(root / split / "filenames.pickle")]
    if not names:
        raise EmptyDatasetError(f"no MM-CelebA-HQ images found under {images_at}")
    skips = Skips(skip_bad)
    records = _paired_records(names, images=by_id, image_dir=images_at, text_dir=texts_at, skips=skips)
    return FileDataset("mm_celeba_hq", root, resolution, records, skips, {"split": split})


# ---------------------------------------------------------------------------------------
# Fashion-MNIST (IDX files)

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
FASHION_MNIST_CLASSES = (  # label order of the dataset; names as a caption would say them
    "t-shirt",
    "pair of trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
FASHION_MNIST_TEMPLATES = (
    "a photo of {a} {name}",
    "{a} {name}",
    "a black and white photo of {a} {name}",
    "a low resolution photo of {a} {name}",
)


def fashion_captions(label: int) -> list[str]:
    name = FASHION_MNIST_CLASSES[label]
    article = "an" if name[0] in "aeiou" else "a"
    return [t.format(a=article, name=name) for t in FASHION_MNIST_TEMPLATES]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped or not: big-endian header
    (0, 0, dtype 0x08 = uint8, ndim), ndim uint32 sizes, then the values."""
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise AnnotationError(f"cannot read IDX file {path}: {err}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise AnnotationError(f"{path} is not a uint8 IDX file (header {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise AnnotationError(f"{path}: IDX header cut short (truncated?)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = memoryview(raw)[4 + 4 * ndim :]
    expected = int(np.prod(dims))
    if len(body) != expected:
        raise AnnotationError(
            f"{path}: header promises {expected} values of shape {dims}, file holds {len(body)} (truncated?)"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"no {stem} or {stem}.gz in {root}")


class FashionMNIST:
    """Fashion-MNIST from its IDX files; captions are made from the labels."""

    kind = "fashion_mnist"

    def __init__(self, root: str | Path | None, resolution: int, split: str = "train"):
        if split not in ("train", "test"):
            raise ValueError(f"fashion_mnist split must be train or test, got {split!r}")
        self.root = existing_dir(root or FASHION_MNIST_ROOT, "fashion_mnist")
        prefix = "train" if split == "train" else "t10k"
        self.files = [_idx_file(self.root, f"{prefix}-{part}") for part in ("images-idx3-ubyte", "labels-idx1-ubyte")]
        self.images, self.labels = read_idx(self.files[0]), read_idx(self.files[1])
        if self.images.ndim != 3 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise AnnotationError(
                f"{self.files[0]} ({self.images.shape}) and {self.files[1]} ({self.labels.shape}) do not pair up"
            )
        if len(self.labels) and self.labels.max() >= len(FASHION_MNIST_CLASSES):
            raise AnnotationError(f"{self.files[1]} has label {self.labels.max()}; Fashion-MNIST has 10 classes")
        if not len(self.images):
            raise EmptyDatasetError(f"{self.files[0]} holds no images")
        self.resolution, self.split = resolution, split
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Item:
        label = int(self.labels[index])
        return Item(
            item_id=f"fashion_mnist-{self.split}-{index % len(self)}",
            image=grey_to_rgb_array(self.images[index], self.resolution),
            captions=fashion_captions(label),
            path=None,
            attributes={"label": label, "class": FASHION_MNIST_CLASSES[label]},
        )

    def fingerprint(self) -> str:
        spec = [self.kind, self.resolution, self.split, [(p.name, p.stat().st_size) for p in self.files]]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()


def read_fashion_mnist(root: str | Path | None, resolution: int, split: str = "train") -> FashionMNIST:
    return FashionMNIST(root, resolution, split)
