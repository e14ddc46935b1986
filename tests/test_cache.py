"""The embedding cache: contents, resume after interruption, mismatch checks, bad input."""

from __future__ import annotations

import csv
import gc
import json

import numpy as np
import pytest
import torch
from encoder_fakes import CountingEncoder
from PIL import Image

from lafite_core.config import EncoderConfig
from lafite_core.data import ImageReadError, ShapesDataset, build_dataset
from lafite_core.data.cache import (
    BadCaptionError,
    CachedImageTextSet,
    CacheMismatchError,
    IncompleteCacheError,
    LongCaptionWarning,
    build_cache,
    load_cache,
)
from lafite_core.data.images import Item
from lafite_core.encoders import load_encoder


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return load_encoder(EncoderConfig(name="lafite-tiny", pretrained=None))


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(resolution=32, size=20, seed=0, split="train")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def test_cache_holds_the_encoders_features_and_an_index(tmp_path, encoder, shapes):
    cache = build_cache(shapes, encoder, tmp_path / "c", batch_size=6, shard_size=8, progress=False)
    n, f = len(shapes), encoder.feature_dim
    captions_per_item = len(shapes[0].captions)
    assert cache.image_features.shape == (n, f) and cache.image_features.dtype == np.float16
    assert cache.caption_features.shape == (n * captions_per_item, f)
    assert cache.feature_dim == f and len(cache) == n
    assert cache.item_ids == [shapes.item_id(i) for i in range(n)]
    np.testing.assert_array_equal(cache.dataset_index, np.arange(n))

    item = shapes[13]
    expected_image = encoder.encode_image(to_tensor(item.image))[0].numpy()
    np.testing.assert_allclose(cache.image_features[13].astype(np.float32), expected_image, atol=2e-3)
    rows = cache.caption_rows(13)
    assert [cache.captions[r] for r in rows] == item.captions
    assert (cache.caption_item[rows] == 13).all()
    expected_text = encoder.encode_text(item.captions).numpy()
    np.testing.assert_allclose(cache.caption_features[rows].astype(np.float32), expected_text, atol=2e-3)

    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["complete"] and meta["dtype"] == "float16"
    assert meta["encoder"] == encoder.identity()
    assert meta["dataset"]["fingerprint"] == shapes.fingerprint()
    assert meta["counts"] == {"items": n, "captions": n * captions_per_item, "skipped": 0}
    assert meta["preprocessing"]["encoder_image_size"] == encoder.image_size
    with open(tmp_path / "c" / "index.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == n * captions_per_item
    assert table[rows[2]]["caption"] == item.captions[2] and table[rows[2]]["item_id"] == item.item_id
    assert not (tmp_path / "c" / "shards").exists()


def test_interrupted_build_continues_without_recomputing_finished_shards(tmp_path, encoder, shapes):
    folder = tmp_path / "c"

    def stop_after_first(shard):
        if shard == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(shapes, encoder, folder, batch_size=4, shard_size=8, progress=False, on_shard=stop_after_first)
    with pytest.raises(IncompleteCacheError, match="unfinished"):
        load_cache(folder)

    counting, redone = CountingEncoder(encoder), []
    cache = build_cache(shapes, counting, folder, batch_size=4, shard_size=8, progress=False, on_shard=redone.append)
    assert redone == [2]  # shards 0 and 1 were finished before the interruption
    assert counting.images == len(shapes) - 16
    fresh = build_cache(shapes, encoder, tmp_path / "fresh", batch_size=4, shard_size=8, progress=False)
    np.testing.assert_array_equal(cache.image_features, fresh.image_features)
    np.testing.assert_array_equal(cache.caption_features, fresh.caption_features)

    again = CountingEncoder(encoder)
    build_cache(shapes, again, folder, batch_size=4, shard_size=8, progress=False)
    assert again.images == 0  # a complete cache is reused as is


def test_loading_refuses_another_encoder_or_dataset(tmp_path, encoder, shapes):
    build_cache(shapes, encoder, tmp_path / "c", shard_size=8, progress=False)
    load_cache(tmp_path / "c", encoder.identity(), shapes.fingerprint())  # the right pair loads

    other_weights = {**encoder.identity(), "pretrained": "/x/other.safetensors", "weights_sha256": "ab" * 32}
    with pytest.raises(CacheMismatchError, match="weights_sha256"):
        load_cache(tmp_path / "c", encoder_identity=other_weights)
    with pytest.raises(CacheMismatchError, match="encoder name: cache has 'lafite-tiny', asked for 'ViT-B-32'"):
        load_cache(tmp_path / "c", encoder_identity={**encoder.identity(), "name": "ViT-B-32"})
    other_data = ShapesDataset(resolution=32, size=20, seed=1, split="train")
    with pytest.raises(CacheMismatchError, match="dataset fingerprint"):
        load_cache(tmp_path / "c", dataset_fingerprint=other_data.fingerprint())
    with pytest.raises(CacheMismatchError, match="another build"):
        build_cache(other_data, encoder, tmp_path / "c", shard_size=8, progress=False)
    with pytest.raises(CacheMismatchError, match="dtype"):
        build_cache(shapes, encoder, tmp_path / "c", shard_size=8, dtype="float32", progress=False)
    with pytest.raises(IncompleteCacheError, match="no embedding cache"):
        load_cache(tmp_path / "nothing")


def _image_folder(root, corrupt: str | None = None):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{name}.png")
        (root / f"{name}.txt").write_text(f"a photo of {name}\nanother caption of {name}\n")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n truncated")


@pytest.mark.parametrize("num_workers", [0, 2])  # read here, or in worker processes
def test_corrupt_image_is_a_clear_error_or_a_listed_skip(tmp_path, encoder, num_workers):
    _image_folder(tmp_path, corrupt="bad.png")
    data = build_dataset("image_folder", tmp_path, 32)
    with pytest.raises(ImageReadError, match="bad.png"):
        build_cache(data, encoder, tmp_path / "c1", progress=False, num_workers=num_workers)

    cache = build_cache(data, encoder, tmp_path / "c2", skip_bad=True, progress=False, num_workers=num_workers)
    assert len(cache) == 3 and len(cache.captions) == 6
    assert all(np.isfinite(cache.image_features).all(axis=1))
    skipped = cache.report["skipped_while_embedding"]
    assert len(skipped) == 1 and "bad.png" in skipped[0]["reason"]
    assert cache.meta["counts"]["skipped"] == 1
    bad_index = skipped[0]["index"]
    assert bad_index not in cache.dataset_index.tolist()
    assert cache.caption_item.tolist() == [0, 0, 1, 1, 2, 2]


class EmptyCaptionSet:
    kind, resolution, skipped = "fake", 32, []

    def __len__(self):
        return 3

    def __getitem__(self, i):
        captions = ["a red circle", "  "] if i == 1 else ["a blue square"]
        return Item(item_id=f"fake-{i}", image=np.zeros((32, 32, 3), np.uint8), captions=captions)

    def fingerprint(self):
        return "fake"


def test_empty_caption_is_an_error_naming_item_and_caption(tmp_path, encoder):
    with pytest.raises(BadCaptionError, match=r"item 1 'fake-1'.*caption 1 is empty"):
        build_cache(EmptyCaptionSet(), encoder, tmp_path / "c", progress=False, skip_bad=True)


def test_cached_image_text_set_reads_images_and_features_by_index(tmp_path, encoder, shapes):
    cache = build_cache(shapes, encoder, tmp_path / "c", dtype="float32", progress=False)
    data = CachedImageTextSet(shapes, cache)
    sample = data[5]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["image"].min() >= -1 and sample["image"].max() <= 1
    torch.testing.assert_close(sample["image"], to_tensor(shapes[5].image)[0])
    torch.testing.assert_close(sample["image_feature"], torch.tensor(cache.image_features[5]))
    assert sample["has_caption"] and sample["index"] == 5
    own = torch.tensor(cache.caption_features[cache.caption_rows(5)])
    drawn = {int((own @ data[5]["caption_feature"]).argmax()) for _ in range(40)}
    assert len(drawn) > 1  # a different caption of item 5 on different calls
    assert all(torch.isclose((own @ data[5]["caption_feature"]).max(), torch.tensor(1.0), atol=1e-5) for _ in range(5))

    flipped = CachedImageTextSet(shapes, cache, xflip=True)
    seen = {bool(torch.equal(flipped[5]["image"], sample["image"].flip(-1))) for _ in range(30)}
    assert seen == {True, False}

    with pytest.raises(CacheMismatchError, match="another dataset"):
        CachedImageTextSet(ShapesDataset(resolution=32, size=20, seed=3, split="train"), cache)


def test_items_without_captions_get_zero_caption_features(tmp_path, encoder):
    rng = np.random.default_rng(1)
    for name in ("x", "y"):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    data = build_dataset("image_folder", tmp_path, 32)
    cache = build_cache(data, encoder, tmp_path / "c", progress=False)
    assert cache.caption_features.shape == (0, encoder.feature_dim) and cache.captions == []
    sample = CachedImageTextSet(data, cache)[1]
    assert not sample["has_caption"] and torch.count_nonzero(sample["caption_feature"]) == 0
    assert cache.paths[1].endswith("y.png")


def test_invalid_dtype_or_worker_count_is_rejected(tmp_path, encoder, shapes):
    with pytest.raises(ValueError, match="float16, float32"):
        build_cache(shapes, encoder, tmp_path / "c", dtype="int8", progress=False)
    with pytest.raises(ValueError, match="num_workers must be >= 0; got -1"):
        build_cache(shapes, encoder, tmp_path / "c", num_workers=-1, progress=False)


def test_worker_processes_give_the_same_cache_as_reading_in_process(tmp_path, encoder, shapes):
    kwargs = dict(batch_size=3, shard_size=8, dtype="float32", progress=False)  # batches of 3, 3, 2 per shard
    here = build_cache(shapes, encoder, tmp_path / "here", num_workers=0, **kwargs)
    workers = build_cache(shapes, encoder, tmp_path / "workers", num_workers=2, **kwargs)
    np.testing.assert_array_equal(here.image_features, workers.image_features)
    np.testing.assert_array_equal(here.caption_features, workers.caption_features)
    np.testing.assert_array_equal(workers.dataset_index, np.arange(len(shapes)))
    assert here.item_ids == workers.item_ids and here.captions == workers.captions
    assert (tmp_path / "here" / "index.csv").read_text() == (tmp_path / "workers" / "index.csv").read_text()


class BatchReadingSet:
    """A dataset with a batch reader, whose item 2 is a corrupt file: reading any batch holding it fails."""

    kind, resolution, skipped = "fake-batches", 32, []

    def __len__(self):
        return 5

    def __getitem__(self, i):
        if i == 2:
            raise ImageReadError("cannot read image /data/broken-2.png: truncated")
        return Item(item_id=f"ok-{i}", image=np.full((32, 32, 3), 40 * i, np.uint8), captions=[f"item {i}"])

    def read_batch(self, indices):
        return [self[i] for i in indices]

    def fingerprint(self):
        return "fake-batches"


def test_a_bad_image_in_a_batch_reader_is_found_item_by_item(tmp_path, encoder):
    with pytest.raises(ImageReadError, match="item 2 of the dataset.*broken-2.png"):
        build_cache(BatchReadingSet(), encoder, tmp_path / "c1", batch_size=4, progress=False)
    cache = build_cache(BatchReadingSet(), encoder, tmp_path / "c2", batch_size=4, skip_bad=True, progress=False)
    assert cache.item_ids == ["ok-0", "ok-1", "ok-3", "ok-4"]  # the rest of the bad batch is kept
    assert cache.dataset_index.tolist() == [0, 1, 3, 4]
    assert [s["index"] for s in cache.report["skipped_while_embedding"]] == [2]


@pytest.mark.parametrize("collector_on", [True, False])
def test_build_leaves_the_cycle_collector_as_it_found_it(tmp_path, encoder, shapes, collector_on):
    """Embedding pauses Python's cycle collector (a speed-up); it must come back as it was,
    also when the build fails."""
    was = gc.isenabled()
    seen = []

    def record(shard):
        seen.append(gc.isenabled())
        if shard == 1:
            raise KeyboardInterrupt

    try:
        gc.enable() if collector_on else gc.disable()
        with pytest.raises(KeyboardInterrupt):
            build_cache(shapes, encoder, tmp_path / "c", batch_size=4, shard_size=8, progress=False, on_shard=record)
        assert seen == [False, False]  # paused while shards were embedded
        assert gc.isenabled() == collector_on
        build_cache(shapes, encoder, tmp_path / "c", batch_size=4, shard_size=8, progress=False)
        assert gc.isenabled() == collector_on
    finally:
        gc.enable() if was else gc.disable()


def test_an_index_with_another_header_is_a_clear_error(tmp_path, encoder, shapes):
    build_cache(shapes, encoder, tmp_path / "c", batch_size=8, progress=False)
    index = tmp_path / "c" / "index.csv"
    index.write_text("row,id\n0,x\n")
    with pytest.raises(ValueError, match=r"index.csv is not an index of this cache format"):
        load_cache(tmp_path / "c")


def test_captions_longer_than_the_context_are_named_with_their_file_and_token_count(tmp_path, encoder):
    folder = tmp_path / "images"
    folder.mkdir()
    long = ", ".join(["a small red triangle in the top left corner on a black background"] * 3)
    for k, caption in enumerate(["a red circle", long]):
        Image.fromarray(np.full((8, 8, 3), 60 * k, np.uint8)).save(folder / f"{k}.png")
        (folder / f"{k}.txt").write_text(caption)
    with pytest.warns(LongCaptionWarning) as caught:
        build_cache(build_dataset("image_folder", folder, 32), encoder, tmp_path / "c", progress=False)
    messages = [str(w.message) for w in caught]
    tokens = len(encoder.tokenizer.encode(long)) + 2
    assert len(messages) == 1 and f"caption 0 of item '1' ({folder / '1.txt'}) has {tokens} tokens" in messages[0]
    assert "split on '.' and ','" in messages[0]


def test_a_missing_cache_names_its_absolute_folder_and_the_notebook_that_builds_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IncompleteCacheError) as caught:
        load_cache("results/cache/nothing")
    message = str(caught.value)
    assert str(tmp_path / "results" / "cache" / "nothing") in message
    assert "lafite run notebooks/01_embed.ipynb --params params/embed.yaml" in message
