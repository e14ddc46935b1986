"""Training statistics: per-tick means of the loss terms, peak memory, stats.jsonl and its plot,
metric-<name>.jsonl and optional TensorBoard events."""

from __future__ import annotations

import json
import sys
import time
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


class MetricLog:
    """Records a run can be followed by while it trains: `metric-<name>.jsonl`, one line per
    measurement as stylegan2-ada writes them, and TensorBoard scalars (every tick's stats and each
    metric) in the run folder when the tensorboard package is installed."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.tensorboard = _summary_writer(self.run_dir)

    def tick(self, line: dict) -> None:
        """A stats.jsonl line's numbers as TensorBoard scalars (losses under Loss/, the rest under Progress/)."""
        if self.tensorboard is None:
            return
        for key, value in line.items():
            if isinstance(value, (int, float)) and key not in ("tick", "step", "nimg"):
                group = "Loss" if key[:2] in ("G_", "D_") else "Progress"
                self.tensorboard.add_scalar(f"{group}/{key}", value, global_step=line["nimg"])
        self.tensorboard.flush()

    def metric(self, name: str, value: float, nimg: int, snapshot: str | None = None) -> None:
        """Append one measurement to metric-<name>.jsonl (and TensorBoard's Metrics/<name>)."""
        record = {
            "results": {name: value},
            "metric": name,
            "kimg": nimg / 1000,
            "snapshot": snapshot,
            "timestamp": time.time(),
        }
        with open(self.run_dir / f"metric-{name}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.add_scalar(f"Metrics/{name}", value, global_step=nimg)
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _summary_writer(run_dir: Path):
    """TensorBoard's event writer for run_dir, or None without the tensorboard package (optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard, which the kit does not require
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir))


def read_metric(run_dir: str | Path, name: str) -> list[dict]:
    path = Path(run_dir) / f"metric-{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def read_stats(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "stats.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# What each loss term is (losses.py), for the panel titles.
TERM_MEANING = {
    "G_adv": "generator adversarial loss",
    "G_con_clip": "L_ConG: image-condition contrastive (CLIP)",
    "G_con_disc": "generator side of L_ConD",
    "G_pl": "path-length penalty (before its weight)",
    "D_adv": "discriminator adversarial loss",
    "D_con_disc": "L_ConD: discriminator contrastive",
    "D_r1": "R1 penalty (before its weight)",
    "D_real_score": "mean D logit on real images",
    "D_fake_score": "mean D logit on generated images",
}


def plot_stats(run_dir: str | Path) -> Path | None:
    """loss_curves.png: one panel per loss term against kimg, each on its own scale (sums such as
    G_total, left out, would flatten the others on a shared axis). Only the contrastive
    terms carry ↓ (lower: conditions matched better); the adversarial terms and the regularisers
    have no better direction of their own."""
    fig = loss_figure(read_stats(run_dir))
    if fig is None:
        return None
    path = Path(run_dir) / "loss_curves.png"
    fig.savefig(path, dpi=100)
    return path


def loss_figure(stats: list[dict]) -> Figure | None:
    """The panels of plot_stats (None without stats or loss terms)."""
    terms = [name for name in (stats[-1] if stats else {}) if name[:2] in ("G_", "D_") and not name.endswith("_total")]
    if not terms:
        return None
    kimg = [s["kimg"] for s in stats]
    columns = min(4, len(terms))
    rows = -(-len(terms) // columns)
    fig = Figure(figsize=(3.6 * columns, 2.7 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, name in zip(axes.flat, terms):
        ax.plot(kimg, [s.get(name, float("nan")) for s in stats], marker="." if len(stats) < 30 else None)
        ax.set_title(f"{name}: {TERM_MEANING.get(name, 'unknown term')}", fontsize=8)
        ax.set_xlabel("kimg", fontsize=8)
        ax.set_ylabel(f"{name} (tick mean){' ↓' if '_con_' in name else ''}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(terms) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig
