"""The embedding cache: CLIP features of every image and caption of a dataset, computed once.

LAFITE trains on CLIP features of its images (and captions, when it has them). Computing them
every epoch would cost more than the small generator itself on a CPU, so they are stored once:

    folder/
      meta.json              encoder identity, preprocessing, dataset fingerprint, counts, dtype
      image_features.npy     [N, f] one row per kept item (float16 or float32, L2-normalised)
      caption_features.npy   [M, f] one row per caption
      caption_item.npy       [M] cache row of the item each caption belongs to
      dataset_index.npy      [N] dataset index of each cache row (differs only if items were skipped)
      index.csv              one line per caption (or per item without captions): item row, item
                             id, image path, caption row, caption text
      report.json            skipped items with the reason (bad files never become random vectors),
                             images smaller than the resolution (enlarged to it), and the empty
                             lines of caption files (left out, counted per file)

Work is done in shards of `shard_size` items under `folder/shards/`; a shard's manifest is
written last, so an interrupted run continues with the first unfinished shard. A build that
stopped at a bad file continues after the file is fixed or skip_bad is turned on: finished shards
whose items are unchanged are kept. One process builds a folder at a time (run_lock.py). Loading
checks the cache against the encoder and dataset asked for and names what differs.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import os
import shutil
import time
import warnings
from contextlib import closing, contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lafite_core.data.images import ImageReadError
from lafite_core.data.readers import SKIP_HINT
from lafite_core.encoders import TextCheck, load_encoder, text_notice
from lafite_core.params import OneLineError
from lafite_core.progress import tqdm
from lafite_core.run_lock import RunLock

FORMAT_VERSION = 1
DTYPES = ("float16", "float32")
ARRAYS = ("image_features", "caption_features", "caption_item", "dataset_index")
INDEX_COLUMNS = ["item_row", "item_id", "path", "caption_row", "caption"]


class CacheMismatchError(ValueError):
    """A cache was built from another encoder or another dataset than the one asked for."""


BUILD_HINT = (
    "build it with notebooks/01_embed.ipynb: `lafite run notebooks/01_embed.ipynb --params params/embed.yaml` "
    "(its cache_dir, data and encoder must match the training params; `make demo` builds "
    "results/cache/shapes-32-lafite-tiny-20k)"
)


class LongCaptionWarning(UserWarning):
    """A caption longer than the encoder's context: its pieces' features were averaged."""


class IncompleteCacheError(OneLineError, FileNotFoundError):
    """A cache folder is missing or its build did not finish."""


class BadCaptionError(ValueError):
    """An item has an empty (or non-string) caption: it would encode to a meaningless feature."""


@dataclass
class EmbeddingCache:
    """A loaded cache. Arrays are memory-mapped, so a large cache does not fill RAM."""

    folder: Path
    meta: dict
    image_features: np.ndarray  # [N, f]
    caption_features: np.ndarray  # [M, f]
    caption_item: np.ndarray  # [M] cache row of each caption's item
    dataset_index: np.ndarray  # [N] dataset index of each cache row
    item_ids: list[str]
    paths: list[str | None]
    captions: list[str]  # [M]
    report: dict

    def __post_init__(self) -> None:
        # captions are stored grouped by item, in item order: row r owns a contiguous range
        self._caption_counts = (
            np.bincount(self.caption_item, minlength=len(self.image_features))
            if len(self.caption_item)
            else np.zeros(len(self.image_features), dtype=np.int64)
        )
        self._caption_starts = np.concatenate([[0], np.cumsum(self._caption_counts)[:-1]]).astype(np.int64)

    @property
    def feature_dim(self) -> int:
        return int(self.meta["feature_dim"])

    def __len__(self) -> int:
        return self.image_features.shape[0]

    def caption_rows(self, row: int) -> np.ndarray:
        """Caption rows of the item in cache row `row` (empty when it has no captions)."""
        return self._caption_starts[row] + np.arange(self._caption_counts[row])


# --------------------------------------------------------------------------------------- build
def build_cache(
    dataset,
    encoder,
    folder: str | Path,
    batch_size: int = 256,
    dtype: str = "float16",
    shard_size: int = 4096,
    skip_bad: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
    num_workers: int = 0,
) -> EmbeddingCache:
    """Embed every item of `dataset` with `encoder` into `folder` and return the loaded cache.

    A complete cache of the same dataset and encoder is returned as is; an unfinished one is
    continued from its first unfinished shard. A corrupt image raises an error naming the file,
    or with skip_bad=True leaves the item out and lists it in report.json. An empty caption is
    always an error naming the item and caption. `on_shard(k)` is called after shard k is saved.
    `num_workers` processes read (decode, render) the next batches while this one is encoded;
    0 reads in this process, between batches.
    """
    if dtype not in DTYPES:
        raise ValueError(f"cache dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be positive; got {batch_size}, {shard_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0; got {num_workers}")
    folder = Path(folder)
    with RunLock(folder, "embedding"):
        meta = _new_meta(dataset, encoder, dtype, shard_size)
        existing = _read_meta(folder)
        if existing is not None:
            _check_same_build(folder, existing, meta, dataset)
            if existing.get("complete"):
                return load_cache(folder)
        _build(dataset, encoder, folder, meta, batch_size, dtype, skip_bad, progress, on_shard, num_workers)
    return load_cache(folder)


def _build(dataset, encoder, folder: Path, meta: dict, batch_size, dtype, skip_bad, progress, on_shard, num_workers):
    """Embed the shards not finished yet, then merge them (build_cache holds the folder's lock)."""
    shard_size = meta["shard_size"]
    shard_dir = folder / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "meta.json", meta)

    num_shards = (len(dataset) + shard_size - 1) // shard_size
    shards = [range(k * shard_size, min(len(dataset), (k + 1) * shard_size)) for k in range(num_shards)]
    todo = [k for k in range(num_shards) if not (shard_dir / f"{k:05d}.json").is_file()]
    bar = tqdm(total=len(dataset), desc="embedding", unit="img", disable=not progress)
    bar.update(len(dataset) - sum(len(shards[k]) for k in todo))
    batches = [shards[k][i : i + batch_size] for k in todo for i in range(0, len(shards[k]), batch_size)]
    embedded = {}  # shards of this run, kept in memory so that the merge need not read them back
    with bar, closing(_read_items(dataset, batches, num_workers)) as items, _cycle_collector_paused():
        for shard in todo:
            manifest = {"listing": _listing(dataset, shards[shard])}
            embedded[shard] = _embed_shard(
                islice(items, len(shards[shard])), encoder, batch_size, dtype, skip_bad, shard_dir, shard, bar, manifest
            )
            if on_shard is not None:
                on_shard(shard)
    _merge_shards(folder, num_shards, meta, dataset, embedded)


@contextmanager
def _cycle_collector_paused():
    """Python's cycle collector off while embedding, on again after (if it was on).

    Embedding makes about five short-lived objects per item (the item, its attributes, its
    manifest entry) and almost no reference cycles (a few hundred objects per 4096 items,
    measured), yet the objects that outlive a batch trigger full collections, and a full
    collection walks every object torch and open_clip made at import (about 400k). Measured on
    20k Shapes images: 0.37 s of collection, a fifth of the build's time outside the encoder.
    Refcounting still frees everything but those few cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _new_meta(dataset, encoder, dtype: str, shard_size: int) -> dict:
    return {
        "format": FORMAT_VERSION,
        "complete": False,
        "encoder": encoder.identity(),
        "preprocessing": preprocessing_of(encoder, dataset),
        "dataset": {
            "kind": getattr(dataset, "kind", type(dataset).__name__),
            "fingerprint": dataset.fingerprint(),
            "length": len(dataset),
        },
        "feature_dim": int(encoder.feature_dim),
        "dtype": dtype,
        "shard_size": shard_size,
    }


def preprocessing_of(encoder, dataset) -> dict:
    """How pixels reached the encoder: the dataset's resolution, [-1, 1], the encoder's own resize
    and normalisation (ClipEncoder.preprocess)."""
    return {
        "dataset_resolution": getattr(dataset, "resolution", None),
        "input_range": "uint8 / 127.5 - 1",
        "encoder_image_size": int(encoder.image_size),
        "resize": "bicubic, antialiased, whole image (no crop)",
        "mean": [round(float(v), 6) for v in encoder.mean.flatten()],
        "std": [round(float(v), 6) for v in encoder.std.flatten()],
    }


def _embed_shard(
    items_read, encoder, batch_size: int, dtype: str, skip_bad: bool, shard_dir: Path, shard: int, bar, manifest: dict
) -> tuple[dict, dict]:
    """Embed one shard's (index, item or read error) pairs, save them and return them as
    (arrays, manifest); the shard's manifest (written last) marks it finished."""
    image_chunks, caption_chunks = [], []
    kept, skipped, enlarged, caption_owner, items = [], [], [], [], []
    pending_images, pending_captions = [], []
    caption_sources: list[str] = []  # per caption of this shard: where it came from, for the long-caption warning
    long: list[tuple[TextCheck, str]] = []  # captions longer than the encoder's context

    def flush() -> None:
        if pending_images:
            images = torch.from_numpy(np.stack(pending_images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            with torch.no_grad():
                image_chunks.append(encoder.encode_image(images).cpu().numpy().astype(dtype))
            pending_images.clear()
        if pending_captions:
            embed_captions(list(pending_captions))
            pending_captions.clear()

    def embed_captions(captions: list[str]) -> None:
        first = len(caption_sources) - len(pending_captions)
        caption_chunks.append(
            encoder.encode_text(captions, on_long=lambda i, check: long.append((check, caption_sources[first + i])))
            .cpu()
            .numpy()
            .astype(dtype)
        )

    for index, item in items_read:
        if isinstance(item, ImageReadError):
            err = item
            if not skip_bad:
                raise ImageReadError(f"item {index} of the dataset: {err}; {SKIP_HINT}") from None
            skipped.append({"index": index, "reason": str(err)})
            bar.update(1)
            continue
        _check_captions(item, index)
        size = _source_size(item.path) if item.path else None
        if size is not None and min(size) < item.image.shape[0]:
            enlarged.append({"index": index, "path": item.path, "size": list(size)})
        kept.append(index)
        items.append({"item_id": item.item_id, "path": item.path, "captions": list(item.captions)})
        caption_owner.extend([len(kept) - 1] * len(item.captions))
        pending_images.append(item.image)
        pending_captions.extend(item.captions)
        where = item.caption_file or item.path or "the dataset"
        caption_sources.extend(f"caption {j} of item {item.item_id!r} ({where})" for j in range(len(item.captions)))
        if len(pending_images) >= batch_size:
            flush()
        while len(pending_captions) >= batch_size:  # keep caption batches bounded too
            embed_captions(pending_captions[:batch_size])
            del pending_captions[:batch_size]
        bar.update(1)
    flush()
    _warn_long(long)
    feature_dim = int(encoder.feature_dim)
    arrays = {
        "image_features": np.concatenate(image_chunks) if image_chunks else np.zeros((0, feature_dim), dtype),
        "caption_features": np.concatenate(caption_chunks) if caption_chunks else np.zeros((0, feature_dim), dtype),
        "caption_item": np.asarray(caption_owner, dtype=np.int64),
        "dataset_index": np.asarray(kept, dtype=np.int64),
    }
    for name, array in arrays.items():
        _save_npy(shard_dir / f"{shard:05d}.{name}.npy", array)
    manifest = {**manifest, "items": items, "skipped": skipped, "enlarged": enlarged}
    # not indented: json's fast C encoder only writes compact text, and no person reads shard manifests
    _write_json(shard_dir / f"{shard:05d}.json", manifest, indent=None)
    return arrays, manifest


def _source_size(path: str) -> tuple[int, int] | None:
    """(width, height) of an image file from its header (not decoded), None if unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None


def _listing(dataset, indices: range) -> str | None:
    """A digest of which items `indices` are (id, file, size, captions, crop), for datasets that
    list files (`records`); a shard whose listing is unchanged may be kept when the dataset's
    fingerprint changes elsewhere (a file fixed, bad files skipped). None for other datasets."""
    records = getattr(dataset, "records", None)
    if records is None or indices.stop > len(records):
        return None
    digest = hashlib.sha256()
    for i in indices:
        r = records[i]
        size = Path(r.path).stat().st_size if Path(r.path).is_file() else None
        digest.update(json.dumps([r.item_id, str(r.path), size, list(r.captions), r.box], default=str).encode())
    return digest.hexdigest()


def _read_shard(shard_dir: Path, shard: int) -> tuple[dict, dict]:
    """(arrays, manifest) of a shard a previous, interrupted run finished."""
    arrays = {name: np.load(shard_dir / f"{shard:05d}.{name}.npy") for name in ARRAYS}
    return arrays, json.loads((shard_dir / f"{shard:05d}.json").read_text())


class _Batches(Dataset):
    """Batch k of the given index batches as [(index, item)], read with the dataset's own batch
    reader where it has one (`read_batch(indices)`); an image that fails to decode comes back as (index, its
    ImageReadError), so the caller decides between raising and skipping."""

    def __init__(self, dataset, batches: list[range]):
        self.dataset, self.batches = dataset, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> list:
        batch = self.batches[k]
        if callable(getattr(self.dataset, "read_batch", None)):
            try:
                return list(zip(batch, self.dataset.read_batch(batch)))
            except ImageReadError:
                pass  # one bad image fails the whole batch: read it item by item to find which
        return [(index, self._read(index)) for index in batch]

    def _read(self, index: int):
        try:
            return self.dataset[index]
        except ImageReadError as err:
            return err


def _as_is(batch):
    return batch


def _read_items(dataset, batches: list[range], num_workers: int):
    """Yield (index, item or its ImageReadError) in order. With workers, processes (not threads)
    read ahead, so decoding neither waits for the encoder nor holds this process's interpreter
    lock; on a CPU they also take cores from the encoder, hence 0 for the small default."""
    loader = DataLoader(_Batches(dataset, batches), batch_size=None, num_workers=num_workers, collate_fn=_as_is)
    iterator = iter(loader)
    try:
        for batch in iterator:
            yield from batch
    finally:  # closed early (an error, an interrupt): stop the workers now, not when collected
        del iterator


def _warn_long(long: list[tuple[TextCheck, str]], named: int = 3) -> None:
    """The split-and-average rule changed what the encoder reads: say so for the first `named`
    long captions of a shard (file, item and token count), then how many more there were."""
    for check, where in long[:named]:
        warnings.warn(text_notice(check, where), LongCaptionWarning, stacklevel=3)
    if len(long) > named:
        warnings.warn(
            f"... and {len(long) - named} more captions longer than the context", LongCaptionWarning, stacklevel=3
        )


def _check_captions(item, index: int) -> None:
    for j, caption in enumerate(item.captions):
        if not isinstance(caption, str) or not caption.strip():
            where = f" ({item.path})" if item.path else ""
            raise BadCaptionError(f"item {index} {item.item_id!r}{where}: caption {j} is empty: {caption!r}")


def _merge_shards(folder: Path, num_shards: int, meta: dict, dataset, embedded: dict[int, tuple[dict, dict]]) -> None:
    """Concatenate the shards (`embedded` by this run, the others from disk) into the final
    arrays, index.csv and report.json; mark complete."""
    shard_dir = folder / "shards"
    parts = {name: [] for name in ARRAYS}
    items, skipped, enlarged = [], [], []
    for shard in range(num_shards):
        arrays, manifest = embedded[shard] if shard in embedded else _read_shard(shard_dir, shard)
        offset = len(items)
        for name in ARRAYS:
            array = arrays[name]
            parts[name].append(array + offset if name == "caption_item" else array)
        items.extend(manifest["items"])
        skipped.extend(manifest["skipped"])
        enlarged.extend(manifest.get("enlarged", []))
    for name, chunks in parts.items():
        _save_npy(folder / f"{name}.npy", np.concatenate(chunks) if chunks else np.zeros(0, np.int64))
    _write_index(folder / "index.csv", items)
    listed = [{"path": p, "reason": r} for p, r in getattr(dataset, "skipped", [])]
    empty_lines = getattr(dataset, "empty_caption_lines", [])
    report = {
        "skipped_while_embedding": skipped,
        "skipped_by_dataset": listed,
        "enlarged": enlarged,
        "empty_caption_lines": {"count": sum(e["lines"] for e in empty_lines), "files": empty_lines},
    }
    _write_json(folder / "report.json", report)
    if enlarged:
        print(
            f"note: {len(enlarged)} images were smaller than {meta['preprocessing']['dataset_resolution']} px "
            f"and were enlarged (listed under 'enlarged' in {folder / 'report.json'})",
            flush=True,
        )
    counts = {
        "items": len(items),
        "captions": sum(len(it["captions"]) for it in items),
        "skipped": len(skipped) + len(listed),
    }
    _write_json(folder / "meta.json", {**meta, "complete": True, "counts": counts, "created": time.time()})
    shutil.rmtree(shard_dir)


def _write_index(path: Path, items: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(INDEX_COLUMNS)
        caption_row = 0
        for row, item in enumerate(items):
            if not item["captions"]:
                writer.writerow([row, item["item_id"], item["path"] or "", "", ""])
            for caption in item["captions"]:
                writer.writerow([row, item["item_id"], item["path"] or "", caption_row, caption])
                caption_row += 1
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict, indent: int | None = 2) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=str))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- load
def load_cache(
    folder: str | Path, encoder_identity: dict | None = None, dataset_fingerprint: str | None = None
) -> EmbeddingCache:
    """Open a finished cache; with an encoder identity and/or a dataset fingerprint, refuse a
    cache built from anything else (CacheMismatchError naming the differing fields)."""
    folder = Path(folder)
    meta = _read_meta(folder)
    if meta is None:
        raise IncompleteCacheError(f"no embedding cache in {folder.resolve()} (meta.json missing); {BUILD_HINT}")
    if not meta.get("complete"):
        raise IncompleteCacheError(f"embedding cache {folder.resolve()} is unfinished; {BUILD_HINT} (it continues)")
    problems = []
    if encoder_identity is not None:
        problems += encoder_differences(meta["encoder"], encoder_identity)
    if dataset_fingerprint is not None and meta["dataset"]["fingerprint"] != dataset_fingerprint:
        problems.append(
            f"dataset fingerprint: cache has {meta['dataset']['fingerprint'][:12]}..., "
            f"asked for {dataset_fingerprint[:12]}... (the dataset's images, captions or options changed)"
        )
    if problems:
        raise CacheMismatchError(f"embedding cache {folder} does not match: " + "; ".join(problems))
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    item_ids, paths, captions = _read_index(folder / "index.csv")
    report = json.loads((folder / "report.json").read_text())
    return EmbeddingCache(
        folder=folder, meta=meta, item_ids=item_ids, paths=paths, captions=captions, report=report, **arrays
    )


def _read_index(path: Path) -> tuple[list[str], list[str | None], list[str]]:
    item_ids, paths, captions = [], [], []
    with open(path, newline="") as f:
        records = csv.reader(f)
        if next(records, None) != INDEX_COLUMNS:
            raise ValueError(
                f"{path} is not an index of this cache format (header should be {','.join(INDEX_COLUMNS)})"
            )
        for item_row, item_id, image_path, caption_row, caption in records:
            if int(item_row) == len(item_ids):
                item_ids.append(item_id)
                paths.append(image_path or None)
            if caption_row != "":
                captions.append(caption)
    return item_ids, paths, captions


def _read_meta(folder: Path) -> dict | None:
    path = folder / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else None


def encoder_differences(cached: dict, asked: dict) -> list[str]:
    """Weights are compared by hash when both sides have one (a file may move, or be named by a
    relative path), else by tag."""
    keys = ["name", "feature_dim", "image_size"]
    keys += (
        ["weights_sha256"]
        if cached.get("weights_sha256") and asked.get("weights_sha256")
        else ["pretrained", "weights_sha256"]
    )
    return [
        f"encoder {key}: cache has {cached.get(key)!r}, asked for {asked.get(key)!r}"
        for key in keys
        if key in asked and cached.get(key) != asked.get(key)
    ]


def _check_same_build(folder: Path, existing: dict, new: dict, dataset) -> None:
    """An existing folder may only be continued by the same build. An unfinished one whose
    dataset changed is continued when every finished shard's items are unchanged (a bad file
    fixed or skipped in a later shard)."""
    problems = encoder_differences(existing["encoder"], new["encoder"])
    for key in ("dtype", "shard_size", "preprocessing"):
        if existing.get(key) != new.get(key):
            problems.append(f"{key}: folder has {existing.get(key)!r}, this build uses {new.get(key)!r}")
    if existing["dataset"]["fingerprint"] != new["dataset"]["fingerprint"]:
        changed = _changed_shards(folder, dataset, new["shard_size"]) if not existing.get("complete") else None
        if changed is None or changed:
            where = f" in finished shard {changed[0]}" if changed else ""
            problems.append(f"dataset fingerprint differs{where} (the dataset's images, captions or options changed)")
    if problems:
        raise CacheMismatchError(
            f"{folder} holds a cache of another build: "
            + "; ".join(problems)
            + f". Use another folder, or start afresh with `rm -r {folder}` and run the embedding again."
        )


def _changed_shards(folder: Path, dataset, shard_size: int) -> list[int] | None:
    """Finished shards whose items differ in `dataset` (sorted); None if that cannot be told."""
    changed = []
    for manifest_path in sorted((folder / "shards").glob("*.json")):
        shard = int(manifest_path.stem)
        listed = json.loads(manifest_path.read_text()).get("listing")
        indices = range(shard * shard_size, (shard + 1) * shard_size)
        now = _listing(dataset, range(indices.start, min(indices.stop, len(dataset))))
        if listed is None or now is None:
            return None
        if listed != now:
            changed.append(shard)
    return changed


# -------------------------------------------------------------------------------- training view
class CachedImageTextSet(Dataset):
    """Images and cached features by index, for training loaders.

    item i -> image [3, R, R] float in [-1, 1] (optionally x-flipped at random), image_feature [f],
    caption_feature [f] of one random caption of the item (drawn anew on every call; zeros and
    has_caption False when it has none), index i (the cache row)."""

    def __init__(self, dataset, cache: EmbeddingCache, xflip: bool = False, check: bool = True):
        if check and dataset.fingerprint() != cache.meta["dataset"]["fingerprint"]:
            raise CacheMismatchError(
                f"embedding cache {cache.folder} was built from another dataset "
                f"than the one given (fingerprints differ)"
            )
        self.dataset, self.cache, self.xflip = dataset, cache, xflip

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict:
        item = self.dataset[int(self.cache.dataset_index[i])]
        image = torch.from_numpy(np.ascontiguousarray(item.image)).permute(2, 0, 1).float() / 127.5 - 1.0
        if self.xflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        rows = self.cache.caption_rows(i)
        if len(rows):
            row = rows[int(torch.randint(len(rows), ()))]
            caption = torch.tensor(self.cache.caption_features[row], dtype=torch.float32)
        else:
            caption = torch.zeros(self.cache.feature_dim)
        return {
            "image": image,
            "image_feature": torch.tensor(self.cache.image_features[i], dtype=torch.float32),
            "caption_feature": caption,
            "has_caption": bool(len(rows)),
            "index": i,
        }


# ------------------------------------------------------------------------------- from a config
def matching_cosines(cache: EmbeddingCache) -> np.ndarray:
    """[M] cosine between each caption's feature and its image's feature (CLIP's modality gap:
    about 0.3 for ViT-B/32 on real captions; LAFITE's pseudo text features imitate it)."""
    images = np.asarray(cache.image_features, dtype=np.float32)[np.asarray(cache.caption_item)]
    return (images * np.asarray(cache.caption_features, dtype=np.float32)).sum(axis=1)


def embed_if_missing(data, encoder, folder: str | Path, progress: bool = True) -> bool:
    """Build the cache a training run reads when it is missing or unfinished, so a fresh clone's
    02_train runs as it is; a finished cache is left to the run, which checks that it matches.
    Returns whether it embedded."""
    from lafite_core.config import EmbedConfig

    meta = _read_meta(Path(folder))
    if meta is not None and meta.get("complete"):
        return False
    print(f"No finished feature cache in {folder}: embedding {data.kind} with {encoder.name} now ", end="")
    print("(`lafite embed` with the same data, encoder and cache_dir does the same).", flush=True)
    _embed(EmbedConfig(data=data, encoder=encoder, cache_dir=str(folder)), progress)
    return True


def _embed(cfg, progress: bool) -> EmbeddingCache:
    from lafite_core.data import dataset_from_config  # the package imports this module

    dataset = dataset_from_config(cfg.data)
    try:
        encoder = load_encoder(cfg.encoder)
    except ValueError as err:
        raise ValueError(f"parameter encoder: {err}") from None
    return build_cache(
        dataset,
        encoder,
        cfg.cache_dir,
        batch_size=cfg.batch_size,
        dtype=cfg.dtype,
        shard_size=cfg.shard_size,
        skip_bad=cfg.data.skip_bad,
        progress=progress,
        num_workers=cfg.num_workers,
    )


def embed_from_config(cfg, progress: bool = True) -> tuple[EmbeddingCache, dict]:
    """Build (or continue, or reuse) the cache an EmbedConfig describes; write its summary to
    `cfg.output_dir/metrics.json` and return (cache, summary)."""
    start = time.time()
    cache = _embed(cfg, progress)
    seconds = time.time() - start
    cosines = matching_cosines(cache)
    summary = {
        "cache_dir": str(cfg.cache_dir),
        "dataset": cfg.data.kind,
        "dataset_fingerprint": cache.meta["dataset"]["fingerprint"],
        "encoder": cache.meta["encoder"]["name"],
        "encoder_weights_sha256": cache.meta["encoder"]["weights_sha256"],
        "feature_dim": cache.feature_dim,
        "dtype": cache.meta["dtype"],
        **cache.meta["counts"],
        "seconds": round(seconds, 2),  # near 0 when a finished cache was reused
        "matching_cosine_mean": float(cosines.mean()) if len(cosines) else None,
        "matching_cosine_std": float(cosines.std()) if len(cosines) else None,
    }
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "metrics.json", summary)
    return cache, summary
