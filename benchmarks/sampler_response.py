"""How long the prompt sampler takes to answer Generate (issue 7's bar: 8 images within 2 s on CPU).

    python benchmarks/sampler_response.py                       # the shipped demo generator
    python benchmarks/sampler_response.py --checkpoint results/runs/train --n 8 --repeats 10

What is timed is the widget's own Generate callback (`SamplerUI.on_generate`), driven from Python:
encoding the prompt with the tiny encoder, generating, and turning the grid into the PNG the page
shows. Only the browser's drawing is left out. The first call after loading is reported on its own
(the UI makes it while loading the generator, before the user can press anything); the figure to
quote is the median of the next `--repeats` calls, each with a new prompt and seed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lafite_core.sampler import DEMO_GENERATOR  # noqa: E402
from lafite_core.sampler_ui import SamplerUI  # noqa: E402

PROMPTS = [
    "a red circle",
    "a small blue square in the center",
    "a red star",
    "a large green triangle",
    "a magenta square on a gray background",
    "a yellow diamond in the top left corner",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEMO_GENERATOR))
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ui = SamplerUI(checkpoint=args.checkpoint, n=args.n)  # loads the generator and makes the first call
    print(f"load + first call: {time.perf_counter() - started:.2f} s")
    times = []
    for i in range(args.repeats):
        ui.prompt.value, ui.seed.value = PROMPTS[i % len(PROMPTS)], i
        started = time.perf_counter()
        ui.on_generate()
        times.append(time.perf_counter() - started)
        if "images in" not in ui.status.value:
            raise RuntimeError(f"Generate did not draw: {ui.status.value}")
    print(
        f"Generate, {args.n} images, {torch.get_num_threads()} threads: median {statistics.median(times):.3f} s, "
        f"max {max(times):.3f} s over {len(times)} calls"
    )


if __name__ == "__main__":
    main()
