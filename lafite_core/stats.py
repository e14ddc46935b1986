"""Training statistics: per-tick means of the loss terms, peak memory, stats.jsonl and its plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure

try:
    import resource
except ImportError:  # Windows has no resource module
    resource = None


class TickStats:
    """Mean of every loss term over a tick, plus speed and memory."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, terms: dict[str, float]) -> None:
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.counts[name] for name in self.sums}


def peak_memory_mb(device: torch.device) -> tuple[float | None, str]:
    """Peak memory and what it measures: CUDA allocations, or the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    if resource is None:
        return None, "unavailable"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, "cpu_peak_rss"


def read_stats(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "stats.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_stats(run_dir: str | Path) -> Path | None:
    """loss_curves.png: each loss term against kimg, one panel per phase."""
    stats = read_stats(run_dir)
    if not stats:
        return None
    kimg = [s["kimg"] for s in stats]
    groups = {"G": [], "D": []}
    for name in stats[-1]:
        if name[:2] in ("G_", "D_"):
            groups[name[0]].append(name)
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, (phase, names) in zip(axes, groups.items()):
        for name in names:
            ax.plot(kimg, [s.get(name, float("nan")) for s in stats], label=name)
        ax.set_xlabel("kimg")
        ax.set_title(f"{phase} terms (tick means)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(run_dir) / "loss_curves.png"
    fig.savefig(path, dpi=100)
    return path
