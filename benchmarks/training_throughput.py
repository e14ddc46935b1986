"""Training throughput (img/s and s/kimg) of the default configs at several resolutions.

    python benchmarks/training_throughput.py                       # params/train.yaml at 32..256
    python benchmarks/training_throughput.py --resolutions 32 --compare official32 official64 paper256
    python benchmarks/training_throughput.py --device cuda --json results/throughput_gpu.json

What is timed: `Trainer.train_step` (every phase: G main, path length, D main, R1, EMA, with the
L_ConG pass through the encoder), on random images and features, so data loading and the feature
cache play no part. Lazy regularisation runs every pl_interval / r1_interval steps, so a step is
timed in its three kinds (all phases; main + path length; main only) and the per-step cost is
the interval-weighted mean. Each kind takes the median of `--repeats` timings after a warm-up.

Each config runs in a fresh process, so its peak memory is its own: CUDA's peak allocation, or on
CPU the peak resident set of that process (the networks, optimisers, encoder and the step's
activations).

Machines drift between runs (about 1.3-1.75x on the 2-core CPU): compare configs only inside one
invocation, where they alternate (`--compare`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lafite_core.config import TrainConfig, from_dict  # noqa: E402
from lafite_core.encoders import load_encoder  # noqa: E402
from lafite_core.params import add_params_arguments, apply_overrides, load_params  # noqa: E402
from lafite_core.stats import peak_memory_mb  # noqa: E402
from lafite_core.training import Trainer  # noqa: E402

# The official networks (LAFITE's 8 mapping layers, z = w = 512) with the official regularisation
# (path length, style mixing): at 32 and 64 px with the channel sizes of conventions.md's
# reference, at 256 px the paper's (G 45 M, D 29 M parameters). The feature size stays the
# encoder's. Each variant brings its own resolution and batch.
OFFICIAL_NETWORK = dict(z_dim=512, w_dim=512, mapping_layers=8, channel_base=4096, channel_max=256)
OFFICIAL_LOSS = dict(r1_gamma=10.0, r1_interval=16, pl_weight=2.0, pl_interval=4, style_mixing_prob=0.9)
VARIANTS = {
    "official32": dict(resolution=32, batch_size=16, network=OFFICIAL_NETWORK),
    "official64": dict(resolution=64, batch_size=16, network=OFFICIAL_NETWORK),
    "paper256": dict(
        resolution=256, batch_size=4, network={**OFFICIAL_NETWORK, "channel_base": 32768, "channel_max": 512}
    ),
}


class RandomImageTextSet(torch.utils.data.Dataset):
    """Items with the CachedImageTextSet layout, random content (only the shapes matter here)."""

    def __init__(self, size: int, resolution: int, feature_dim: int):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(size, 3, resolution, resolution, generator=g) * 2 - 1
        self.features = torch.nn.functional.normalize(torch.randn(size, feature_dim, generator=g), dim=1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {
            "image": self.images[i],
            "image_feature": self.features[i],
            "caption_feature": self.features[i],
            "has_caption": True,
            "index": i,
        }


def config_for(
    base: dict, resolution: int, variant: str, device: str, run_dir: str, overrides: list[str] = ()
) -> TrainConfig:
    params = copy.deepcopy(base)
    params.setdefault("network", {})["resolution"] = resolution
    params.setdefault("data", {})["resolution"] = resolution
    if variant in VARIANTS:
        params["network"].update(VARIANTS[variant]["network"])
        params.setdefault("loss", {}).update(OFFICIAL_LOSS)
        params["batch_size"] = VARIANTS[variant]["batch_size"]
    params.update(run_dir=run_dir, device=device, resume=None, fine_tune_from=None, diffaugment=[])
    params.setdefault("perturbation", {})["kind"] = "official"  # no learned-net pre-training in a benchmark
    params.setdefault("encoder", {})["pretrained"] = None  # same architecture, same speed, no weights file needed
    params = apply_overrides(params, list(overrides))
    return from_dict(TrainConfig, params)


def time_step(trainer: Trainer, batch: dict, step: int) -> float:
    trainer.step = step  # which lazy phases run depends only on the step counter
    if trainer.dist.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_step(batch)
    if trainer.dist.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(cfg: TrainConfig, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg.run_dir = tmp
        feature_dim = _encoder_dim(cfg)
        trainer = Trainer(cfg, RandomImageTextSet(max(64, cfg.batch_size), cfg.network.resolution, feature_dim))
        try:
            batch = next(trainer.batches)
            pl, r1 = cfg.loss.pl_interval, cfg.loss.r1_interval
            cycle = pl * r1 // math.gcd(pl, r1)
            kinds: dict[str, list[int]] = {}  # which lazy phases run -> [a step of that kind, count per cycle]
            for step in range(cycle):
                name = "main" + ("+pl" if step % pl == 0 else "") + ("+r1" if step % r1 == 0 else "")
                kinds.setdefault(name, [step, 0])[1] += 1
            for step, _ in kinds.values():  # warm-up (allocations, autotuning)
                time_step(trainer, batch, step)
            times = {
                k: statistics.median(time_step(trainer, batch, s) for _ in range(repeats))
                for k, (s, _) in kinds.items()
            }
        finally:
            trainer.close()
        per_step = sum(times[k] * count for k, (_, count) in kinds.items()) / cycle
        img_s = cfg.batch_size / per_step
        peak_mb, peak_kind = peak_memory_mb(trainer.dist.device)
        return {
            "resolution": cfg.network.resolution,
            "batch_size": cfg.batch_size,
            "device": str(trainer.dist.device),
            "G_params_M": round(sum(p.numel() for p in trainer.G.parameters()) / 1e6, 3),
            "D_params_M": round(sum(p.numel() for p in trainer.D.parameters()) / 1e6, 3),
            "img_per_s": round(img_s, 2),
            "s_per_kimg": round(1000 / img_s, 1),
            "step_s": {k: round(v, 4) for k, v in times.items()},
            "peak_mem_mb": round(peak_mb),
            "peak_mem_kind": peak_kind,
        }


def measure_in_fresh_process(cfg: TrainConfig, repeats: int, threads: int | None) -> dict:
    """`measure` in a new process, so that the peak memory it reports belongs to this config."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_measure_with_threads, cfg, repeats, threads).result()


def _measure_with_threads(cfg: TrainConfig, repeats: int, threads: int | None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    return measure(cfg, repeats)


_DIMS: dict[str, int] = {}


def _encoder_dim(cfg: TrainConfig) -> int:
    if cfg.encoder.name not in _DIMS:
        _DIMS[cfg.encoder.name] = load_encoder(cfg.encoder).feature_dim
    return _DIMS[cfg.encoder.name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_params_arguments(parser, "training", "mixed_precision=true")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument(
        "--compare",
        nargs="*",
        default=[],
        choices=list(VARIANTS),
        help="also time these variants (each at its own resolution), after the defaults",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="write the rows to this file too")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_params(args.params or REPO / "params" / "train.yaml")
    rows = []
    runs = [("default", r) for r in args.resolutions] + [(v, VARIANTS[v]["resolution"]) for v in args.compare]
    for variant, resolution in runs:
        cfg = config_for(base, resolution, variant, args.device, "unused", args.overrides)
        row = {"variant": variant, **measure_in_fresh_process(cfg, args.repeats, args.threads)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        device_name = torch.cuda.get_device_name()
    else:
        device_name = f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{device_name}, torch {torch.__version__}")
    print("| variant | resolution | batch | G (M) | D (M) | img/s | s/kimg | peak memory (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['resolution']} | {r['batch_size']} | {r['G_params_M']} | {r['D_params_M']} "
            f"| {r['img_per_s']} | {r['s_per_kimg']} | {r['peak_mem_mb']} ({r['peak_mem_kind']}) |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
