"""Network speed, this checkout against an older commit: the same weights and inputs, timed
alternating in one process, so machine drift affects both sides alike.

    python benchmarks/network_speed.py                          # 32, 64, 256 px against f9c9d9f
    python benchmarks/network_speed.py --configs 256 --rounds 3 --json results/network_speed.json
    python benchmarks/network_speed.py --configs 32 --profile   # where the time goes, per op
    python benchmarks/network_speed.py --low-precision-blocks 4 # bf16 autocast (CPU) / fp16 (CUDA)

Two workloads, as in the side-by-side with the authors' code (../shared/tools/official/bench_pair.py):
- step: G forward, D on the fakes and on reals, logistic loss, backward into every G and D
  parameter (no optimiser, no encoder, no lazy regularisation);
- inference: 8 images from G in eval mode with constant noise, without gradients.

Before timing, both sides run on the same inputs and the largest absolute difference of their
images and logits is printed: a speed-up counts only if the numbers are the same. GFLOP/s use
torch.utils.flop_counter's count and are set against a 2048 x 2048 fp32 matmul timed in the same run.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import io
import json
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lafite_core import config, networks  # noqa: E402

BASE_COMMIT = "f9c9d9f"  # the commit issue 14's targets are measured against
INFERENCE_BATCH = 8


@dataclass(frozen=True)
class Setting:
    resolution: int
    batch: int
    channel_base: int
    channel_max: int


# The side-by-side's configurations: z = w = f = 512 and 8 mapping layers throughout.
SETTINGS = {
    "32": Setting(32, 16, 4096, 256),
    "64": Setting(64, 16, 4096, 256),
    "256": Setting(256, 4, 32768, 512),  # the paper's networks: G 45.0 M, D 29.1 M parameters
}
WIDTH = 512


def import_networks_at(commit: str):
    """The `networks` and `config` modules of `commit`, importable beside this checkout's: the
    package is exported with `git archive` and renamed, so both versions live in one process."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "lafite_core"], capture_output=True, check=True
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="lafite-base-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    name = "lafite_core_" + re.sub(r"\W", "_", commit)
    (folder / "lafite_core").rename(folder / name)
    for source in (folder / name).rglob("*.py"):
        source.write_text(re.sub(r"\blafite_core\b", name, source.read_text()))
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"{name}.networks"), importlib.import_module(f"{name}.config")


def network_config(config_module, setting: Setting, low_precision_blocks: int = 0):
    """The same networks in either version's own NetworkConfig; `low_precision_blocks` highest
    resolutions under autocast, clamped at 256 as the authors do for fp16."""
    return config_module.NetworkConfig(
        resolution=setting.resolution,
        z_dim=WIDTH,
        w_dim=WIDTH,
        feature_dim=WIDTH,
        mapping_layers=8,
        channel_base=setting.channel_base,
        channel_max=setting.channel_max,
        num_fp16_res=low_precision_blocks,
        conv_clamp=256.0 if low_precision_blocks else None,
    )


class Side:
    """One version's G, D and eval-mode G, with the step and the inference as callables."""

    def __init__(
        self,
        networks_module,
        config_module,
        setting: Setting,
        inputs: dict,
        weights_from=None,
        low_precision_blocks: int = 0,
    ):
        cfg = network_config(config_module, setting, low_precision_blocks)
        torch.manual_seed(0)
        device = inputs["z"].device
        self.G = networks_module.Generator(cfg, WIDTH).to(device).train()
        self.D = networks_module.Discriminator(cfg, WIDTH).to(device).train()
        if weights_from is not None:
            self.G.load_state_dict(weights_from.G.state_dict())
            self.D.load_state_dict(weights_from.D.state_dict())
        self.G_eval = copy.deepcopy(self.G).eval().requires_grad_(False)
        for net in (self.G, self.D, self.G_eval):
            net.set_mixed_precision(low_precision_blocks > 0)
        self.params = list(self.G.parameters()) + list(self.D.parameters())
        self.inputs = inputs

    def step(self) -> None:
        for p in self.params:
            p.grad = None
        x = self.inputs
        fakes = self.G(x["z"], x["c"])
        fake_logits, _ = self.D(fakes, x["c"])
        real_logits, _ = self.D(x["reals"], x["c"])
        (F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()).backward()

    def inference(self) -> torch.Tensor:
        x = self.inputs
        with torch.no_grad():
            return self.G_eval(x["z_inference"], x["c_inference"], noise_mode="const")

    def outputs(self) -> dict[str, torch.Tensor]:
        x = self.inputs
        with torch.no_grad():
            return {
                "images": self.inference(),
                "real_logits": self.D(x["reals"], x["c"])[0],
                "fake_logits": self.D(self.G(x["z"], x["c"], noise_mode="const"), x["c"])[0],
            }


def make_inputs(setting: Setting, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    n, r = max(setting.batch, INFERENCE_BATCH), setting.resolution
    z, c = torch.randn(n, WIDTH, generator=g), F.normalize(torch.randn(n, WIDTH, generator=g), dim=1)
    inputs = {
        "z": z[: setting.batch],
        "c": c[: setting.batch],
        "reals": torch.rand(setting.batch, 3, r, r, generator=g) * 2 - 1,
        "z_inference": z[:INFERENCE_BATCH],
        "c_inference": c[:INFERENCE_BATCH],
    }
    return {k: v.to(device) for k, v in inputs.items()}


def max_differences(a: Side, b: Side) -> dict[str, float]:
    out_a, out_b = a.outputs(), b.outputs()
    return {k: float((out_a[k] - out_b[k]).abs().max()) for k in out_a}


def gflop(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _synchronize()
        start = time.perf_counter()
        fn()
        _synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def matmul_peak(device: str, repeats: int = 5) -> float:
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    a @ b
    return 2 * 2048**3 / 1e9 / timed(lambda: a @ b, repeats)


def compare(name: str, setting: Setting, base_modules, args) -> dict:
    inputs = make_inputs(setting, args.device)
    base = Side(*base_modules, setting, inputs)
    new = Side(networks, config, setting, inputs, weights_from=base, low_precision_blocks=args.low_precision_blocks)
    rounds, repeats = args.rounds, args.repeats
    diffs = max_differences(base, new)
    print(f"[{name} px] max |new - base|: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()), flush=True)
    work = {"step": (base.step, new.step), "inference": (base.inference, new.inference)}
    # The work is counted on the base side: a grouped convolution's count in FlopCounterMode does
    # not divide by the groups, so the new side's forms would inflate it.
    flops = {kind: gflop(fns[0]) for kind, fns in work.items()}
    for fns in work.values():  # warm-up: allocator, oneDNN primitive caches
        for fn in fns:
            fn()
            fn()
    rows = {kind: {"base_s": [], "new_s": [], "ratio": []} for kind in work}
    for r in range(rounds):
        line = []
        for kind, (base_fn, new_fn) in work.items():
            t_base, t_new = timed(base_fn, repeats), timed(new_fn, repeats)
            rows[kind]["base_s"].append(t_base)
            rows[kind]["new_s"].append(t_new)
            rows[kind]["ratio"].append(t_base / t_new)
            line.append(f"{kind} base {t_base:.3f}s new {t_new:.3f}s = {t_base / t_new:.2f}x")
        print(f"[{name} px] round {r}: " + " | ".join(line), flush=True)
    summary = {"config": name, **setting.__dict__, "max_abs_difference": diffs}
    for kind, row in rows.items():
        t_new = statistics.median(row["new_s"])
        summary[kind] = {
            "speedup_median_of_rounds": round(statistics.median(row["ratio"]), 3),
            "rounds": [round(x, 3) for x in row["ratio"]],
            "base_s": round(statistics.median(row["base_s"]), 4),
            "new_s": round(t_new, 4),
            "gflop": round(flops[kind], 2),
            "new_gflop_per_s": round(flops[kind] / t_new, 1),
        }
    return summary


OP_KINDS = (  # how profile_table groups torch's operators, first match wins
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution", "conv2d", "conv_transpose")),
    ("matmul (mapping, styles, heads)", ("mm", "addmm", "bmm", "baddbmm", "linear")),
    ("copies and layout changes", ("copy_", "_to_copy", "contiguous", "clone", "cat", "pad", "fill_")),
)


def op_kind(name: str) -> str:
    bare = name.removeprefix("aten::")
    for kind, names in OP_KINDS:
        if any(bare == n or (len(n) > 4 and n in bare) for n in names):
            return kind
    return "elementwise and the rest"


def profile_table(setting: Setting, device: str) -> str:
    """Where this checkout's time goes: torch.profiler's self time, grouped by kind of operator."""
    side = Side(networks, config, setting, make_inputs(setting, device))
    lines = ["| workload | " + " | ".join(kind for kind, _ in OP_KINDS) + " | elementwise and the rest |"]
    lines.append("|---" * (len(OP_KINDS) + 2) + "|")
    for name, fn in (("step", side.step), ("inference", side.inference)):
        fn()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fn()
        shares = {kind: 0.0 for kind, _ in OP_KINDS} | {"elementwise and the rest": 0.0}
        for event in prof.key_averages():
            shares[op_kind(event.key)] += event.self_cpu_time_total
        total = sum(shares.values())
        lines.append(f"| {name} | " + " | ".join(f"{100 * v / total:.0f}%" for v in shares.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--base", default=BASE_COMMIT, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timings per side per round (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--low-precision-blocks",
        type=int,
        default=0,
        help="run this checkout's N highest resolutions under autocast (bf16 on CPU, fp16 on CUDA); "
        "the differences printed are then those of mixed precision",
    )
    parser.add_argument("--profile", action="store_true", help="print where this checkout's time goes, instead")
    parser.add_argument("--json", help="write the summaries to this file too")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.profile:
        for name in args.configs:
            print(
                f"\n{name} px, batch {SETTINGS[name].batch}, {args.threads} threads\n"
                + profile_table(SETTINGS[name], args.device)
            )
        return
    base_modules = import_networks_at(args.base)
    peak = matmul_peak(args.device)
    where = (
        torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    )
    precision = f"; {args.low_precision_blocks} blocks in low precision" if args.low_precision_blocks else ""
    machine = f"{where}, torch {torch.__version__}; 2048^2 fp32 matmul {peak:.0f} GFLOP/s{precision}"
    print(machine, flush=True)
    summaries = [compare(n, SETTINGS[n], base_modules, args) for n in args.configs]
    print(f"\n{machine}; against {args.base}, median of {args.rounds} alternating rounds")
    print("| config | batch | step speed-up | step GFLOP/s (% of matmul) | inference speed-up | inference GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for s in summaries:
        st, inf = s["step"], s["inference"]
        print(
            f"| {s['config']} px | {s['batch']} | {st['speedup_median_of_rounds']:.2f}x "
            f"| {st['new_gflop_per_s']:.0f} ({100 * st['new_gflop_per_s'] / peak:.0f}%) "
            f"| {inf['speedup_median_of_rounds']:.2f}x | {inf['new_gflop_per_s']:.0f} ({100 * inf['new_gflop_per_s'] / peak:.0f}%) |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "base": args.base, "rows": summaries}, indent=2))


if __name__ == "__main__":
    main()
