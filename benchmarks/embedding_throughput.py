"""Embedding throughput: `build_cache` against the bare encoder at the same batch size.

The bare side embeds images (and captions) that are already in memory as tensors / strings: the
encoder's own speed. The cache side is the whole `build_cache` run on a fresh folder: rendering or
decoding each item, batching, encoding, writing shards, merging them and the index. Their ratio is
the overhead of loading and caching (target: under 15%).

These machines drift by 1.3-1.75x within minutes, so the two sides alternate (ABBA order) and
each repetition reports its own ratio; the median ratio is the figure to quote. Each build also
clocks its own encoder calls: the time outside them (us per item) is the overhead measured within
one run, which drift hits far less (it leaves out any slowdown of the encoder itself).

    python benchmarks/embedding_throughput.py                  # lafite-tiny and ViT-B-32, random weights
    python benchmarks/embedding_throughput.py --encoders lafite-tiny --items 4096 --repeats 5
    python benchmarks/embedding_throughput.py --num-workers 1   # read ahead in a worker process
    python benchmarks/embedding_throughput.py --encoders lafite-tiny --content images --items 60000 --repeats 3
                                                                # the size params/embed.yaml embeds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lafite_core.config import EmbedConfig, EncoderConfig
from lafite_core.data import ShapesDataset
from lafite_core.data.cache import build_cache
from lafite_core.data.shapes import clear_coverage_memo
from lafite_core.encoders import load_encoder

# encoder -> (Shapes resolution, items without / with captions, batch size): sized for a 2-core
# CPU (ViT-B-32's text tower costs more per caption than its image tower per image, and Shapes
# has 6 captions per image)
DEFAULTS = {"lafite-tiny": (32, 2048, 512, 256), "ViT-B-32": (64, 192, 32, 64)}


class WithoutCaptions:
    """The same dataset with its captions dropped (an image-only set, as in language-free training)."""

    def __init__(self, dataset):
        self.dataset, self.kind, self.resolution, self.skipped = dataset, dataset.kind, dataset.resolution, []

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.read_batch([i])[0]

    def read_batch(self, indices):  # Shapes' batch reader, as build_cache uses it
        items = self.dataset.read_batch(indices)
        for item in items:  # fresh items: nobody else holds them
            item.captions = []
        return items

    def fingerprint(self):
        return "no-captions-" + self.dataset.fingerprint()


def bare_seconds(encoder, images: torch.Tensor, captions: list[list[str]], batch_size: int) -> float:
    """Time to embed in-memory images (and their captions) in batches of `batch_size`."""
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            encoder.encode_image(images[i : i + batch_size])
            texts = [c for item_captions in captions[i : i + batch_size] for c in item_captions]
            for j in range(0, len(texts), batch_size):
                encoder.encode_text(texts[j : j + batch_size])
    return time.perf_counter() - start


class TimedEncoder:
    """The encoder, with a clock on its calls: the time a build spends outside them is its overhead."""

    def __init__(self, encoder):
        self.encoder, self.seconds = encoder, 0.0

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_image(self, images):
        return self._timed(self.encoder.encode_image, images)

    def encode_text(self, texts):
        return self._timed(self.encoder.encode_text, texts)

    def _timed(self, encode, inputs):
        start = time.perf_counter()
        try:
            return encode(inputs)
        finally:
            self.seconds += time.perf_counter() - start


def cache_seconds(dataset, encoder, batch_size: int, shard_size: int, num_workers: int) -> tuple[float, float]:
    """(seconds of the whole build, seconds of it spent inside the encoder)."""
    clear_coverage_memo()  # every build renders from scratch, as in a fresh process
    timed = TimedEncoder(encoder)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        build_cache(
            dataset,
            timed,
            Path(folder) / "cache",
            batch_size=batch_size,
            shard_size=shard_size,
            progress=False,
            num_workers=num_workers,
        )
        return time.perf_counter() - start, timed.seconds


def benchmark(
    name: str,
    resolution: int,
    items: int,
    batch_size: int,
    repeats: int,
    captions: bool,
    num_workers: int,
    shard_size: int,
) -> dict:
    torch.manual_seed(0)
    encoder = load_encoder(EncoderConfig(name=name, pretrained=None))
    shapes = ShapesDataset(resolution=resolution, size=items, seed=0, split="train")
    dataset = shapes if captions else WithoutCaptions(shapes)
    loaded = dataset.read_batch(range(len(dataset)))
    images = torch.from_numpy(np.stack([it.image for it in loaded])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    texts = [it.captions for it in loaded]

    bare_seconds(encoder, images[:batch_size], texts[:batch_size], batch_size)  # warm-up
    rows = []
    for r in range(repeats):
        order = ("bare", "cache") if r % 2 == 0 else ("cache", "bare")  # ABBA: drift hits both sides
        t = {}
        for side in order:
            if side == "bare":
                t["bare"] = bare_seconds(encoder, images, texts, batch_size)
            else:
                t["cache"], t["inside"] = cache_seconds(dataset, encoder, batch_size, shard_size, num_workers)
        rows.append(
            {
                "bare_img_s": items / t["bare"],
                "cache_img_s": items / t["cache"],
                "ratio": t["cache"] / t["bare"],
                "outside_us": 1e6 * (t["cache"] - t["inside"]) / items,
                "inside_ratio": t["cache"] / t["inside"],
            }
        )
    ratio = statistics.median(r["ratio"] for r in rows)
    inside_ratio = statistics.median(r["inside_ratio"] for r in rows)
    return {
        "encoder": name,
        "captions": captions,
        "resolution": resolution,
        "items": items,
        "batch_size": batch_size,
        "shard_size": shard_size,
        "feature_dim": encoder.feature_dim,
        "repeats": rows,
        "median_ratio": ratio,
        "median_overhead_pct": 100 * (ratio - 1),
        "median_outside_us": statistics.median(r["outside_us"] for r in rows),
        "median_inside_ratio": inside_ratio,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=list(DEFAULTS))
    parser.add_argument("--items", type=int, help="items per side (default: per encoder)")
    parser.add_argument("--batch-size", type=int, help="default: per encoder")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--num-workers", type=int, default=0, help="build_cache reader processes (default 0: in process)"
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=EmbedConfig.shard_size,
        help=f"items per shard file (default {EmbedConfig.shard_size}, the kit's)",
    )
    parser.add_argument(
        "--content",
        choices=("images", "captions", "both"),
        default="both",
        help="images only, images + captions, or both cases (default)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, build_cache num_workers={args.num_workers}")
    for name in args.encoders:
        resolution, image_items, caption_items, batch = DEFAULTS.get(name, (64, 256, 32, 64))
        for captions in {"images": (False,), "captions": (True,), "both": (False, True)}[args.content]:
            items = args.items or (caption_items if captions else image_items)
            result = benchmark(
                name,
                resolution,
                items,
                args.batch_size or batch,
                args.repeats,
                captions,
                args.num_workers,
                args.shard_size,
            )
            what = "images + 6 captions each" if captions else "images only"
            print(
                f"\n{name} ({what}), {result['items']} items at {resolution} px, batch {result['batch_size']}, "
                f"shards of {result['shard_size']}, "
                f"f = {result['feature_dim']}"
            )
            for i, row in enumerate(result["repeats"]):
                print(
                    f"  rep {i}: bare {row['bare_img_s']:8.1f} img/s   build_cache {row['cache_img_s']:8.1f} img/s"
                    f"   time ratio {row['ratio']:.3f}   outside the encoder {row['outside_us']:5.1f} us/item"
                    f" ({row['inside_ratio']:.3f})"
                )
            print(f"  median time ratio {result['median_ratio']:.3f} -> overhead {result['median_overhead_pct']:+.1f}%")
            print(
                f"  within the builds: {result['median_outside_us']:.1f} us/item outside the encoder, "
                f"build / its own encoder time {result['median_inside_ratio']:.3f}"
            )


if __name__ == "__main__":
    main()
