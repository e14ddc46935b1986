"""Does a converted snapshot give the authors' images? (issue 15's bar: max abs difference < 1e-4.)

    python benchmarks/converted_snapshot.py FOLDER [--encoder ViT-B-32 --pretrained openai]

FOLDER holds what a run of the authors' own code wrote: `network-snapshot-000000.pkl` and, for
fixed inputs, `z.npy`, `fts.npy` and `images.npy` (their G_ema's images at fp32, constant noise,
truncation 1). The side-by-side tools outside this repository write such a folder; nothing here
imports the authors' code. The snapshot is converted with lafite_core.convert into FOLDER/kit/,
the converted generator renders the same inputs, and one JSON line reports the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lafite_core.config import EncoderConfig  # noqa: E402
from lafite_core.convert import convert_snapshot  # noqa: E402
from lafite_core.sampler import load_generator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--encoder", default="ViT-B-32")
    parser.add_argument("--pretrained", default="openai")
    args = parser.parse_args()
    started = time.time()
    written = convert_snapshot(
        args.folder / "network-snapshot-000000.pkl",
        args.folder / "kit" / "generator.safetensors",
        EncoderConfig(name=args.encoder, pretrained=args.pretrained),
        training_checkpoint=args.folder / "kit",
    )
    G, _ = load_generator(written["generator"])
    z, fts, theirs = (torch.from_numpy(np.load(args.folder / f"{name}.npy")) for name in ("z", "fts", "images"))
    with torch.no_grad():
        ours = G(z, fts, truncation_psi=1.0, noise_mode="const")
    print(
        json.dumps(
            {
                "folder": str(args.folder),
                "network": written["network"],
                "parameters_G": sum(p.numel() for p in G.parameters()),
                "max_abs_diff": float((ours - theirs).abs().max()),
                "their_range": [float(theirs.min()), float(theirs.max())],
                "seconds": round(time.time() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
