"""Time to quality: how many kimg and wall minutes a training config needs to draw what it is told.

Every checkpoint of one or more run folders is read by the independent judge
(lafite_core/prompt_following.py: every attribute combination, seen and held-out). The wall time of
a checkpoint is the training time logged in the run's stats.jsonl up to it, so a resumed run counts
only time spent training. Judged checkpoints are remembered in each run's `judge.jsonl`, so the
script can be run again while a run is still training.

    python benchmarks/time_to_quality.py results/runs/train [more run folders]    # judge and report
    python benchmarks/time_to_quality.py --train --params params/train.yaml --set total_kimg=60 --set run_dir=results/runs/ttq
    python benchmarks/time_to_quality.py RUN... --out results/time_to_quality       # table, curve, thresholds

Writes <out>.csv (one row per checkpoint and split), <out>.md (the table and the first kimg /
minutes at which each threshold was reached) and <out>.png (the curves, with chance levels).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lafite_core import checkpoint as ckpt  # noqa: E402
from lafite_core.attribute_classifier import AttributeClassifier, load_attribute_classifier  # noqa: E402
from lafite_core.config import TrainConfig  # noqa: E402
from lafite_core.params import add_params_arguments, load_with_overrides  # noqa: E402
from lafite_core.prompt_following import ATTRIBUTES, JUDGE_WEIGHTS, SPLITS, judge  # noqa: E402
from lafite_core.reporting import attribute_chance  # noqa: E402
from lafite_core.training import train  # noqa: E402

THRESHOLDS = (("shape", 0.6), ("shape", 0.9), ("colour", 0.95), ("position", 0.9), ("all", 0.85))


def training_minutes(run_dir: Path) -> dict[int, float]:
    """nimg at each logged tick -> training minutes up to it (resumed runs keep the earlier ticks)."""
    minutes, total, previous = {}, 0.0, 0.0
    # s_per_kimg times the tick's kimg is its training time; ticks are logged in order.
    for line in (run_dir / "stats.jsonl").read_text().splitlines():
        if not line.strip():
            continue
        tick = json.loads(line)
        total += tick["s_per_kimg"] * (tick["kimg"] - previous) / 60
        previous = tick["kimg"]
        minutes[tick["nimg"]] = total
    return minutes


def judged_rows(run_dir: Path, seed: int, classifier: AttributeClassifier) -> list[dict]:
    """One row per (checkpoint, split), judging only checkpoints not yet in run_dir/judge.jsonl."""
    memo_path = run_dir / "judge.jsonl"
    memo = {}
    if memo_path.is_file():
        memo = {r["checkpoint"]: r for r in map(json.loads, memo_path.read_text().splitlines()) if r["seed"] == seed}
    minutes = training_minutes(run_dir)
    rows = []
    for path in ckpt.list_checkpoints(run_dir / "checkpoints"):
        if path.name not in memo:
            result = judge(path, seed=seed, classifier=classifier)
            memo[path.name] = {"checkpoint": path.name, "seed": seed, **result}
            with open(memo_path, "a") as log:
                log.write(json.dumps(memo[path.name]) + "\n")
            print(
                f"{run_dir.name} {result['kimg']:.0f} kimg: shape {result['seen']['shape']:.2f} "
                f"(held-out {result['heldout']['shape']:.2f}), all {result['seen']['all']:.2f}",
                flush=True,
            )
        result = memo[path.name]
        nimg = round(result["kimg"] * 1000)
        for which in SPLITS:
            rows.append(
                {
                    "run": run_dir.name,
                    "kimg": result["kimg"],
                    "minutes": minutes.get(nimg),
                    "prompts": which,
                    **{a: result[which][a] for a in ATTRIBUTES},
                }
            )
    return rows


def first_reached(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and split, the first checkpoint at which each threshold holds (blank: not reached)."""
    records = []
    for (run, which), group in table.groupby(["run", "prompts"], sort=False):
        group = group.sort_values("kimg")
        record = {"run": run, "prompts": which}
        for attribute, bar in THRESHOLDS:
            hit = group[group[attribute] >= bar]
            label = f"{attribute} >= {bar}"
            record[label] = "" if hit.empty else f"{hit.kimg.iloc[0]:.0f} kimg / {hit.minutes.iloc[0]:.1f} min"
        records.append(record)
    return pd.DataFrame(records)


def plot(table: pd.DataFrame, path: Path) -> None:
    """Shape and all-five accuracy against kimg and against minutes; chance as grey lines."""
    chance = attribute_chance()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharey=True)
    for row, attribute in enumerate(("shape", "all")):
        for col, x in enumerate(("kimg", "minutes")):
            ax = axes[row][col]
            for (run, which), group in table.groupby(["run", "prompts"], sort=False):
                group = group.sort_values("kimg")
                ax.plot(group[x], group[attribute], "-o" if which == "seen" else "--x", ms=3, label=f"{run} ({which})")
            ax.axhline(chance[attribute], color="grey", lw=1, ls=":", label="chance")
            ax.set_xlabel("thousands of images shown" if x == "kimg" else "training minutes")
            ax.set_ylabel(f"judge: {attribute} accuracy (higher is better)")
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(labels) // 3), 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(run_dirs: list[Path], out: Path, seed: int) -> pd.DataFrame:
    classifier = load_attribute_classifier(JUDGE_WEIGHTS)
    table = pd.DataFrame([row for run_dir in run_dirs for row in judged_rows(run_dir, seed, classifier)])
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    plot(table, out.with_suffix(".png"))
    chance = attribute_chance()
    text = [
        "# Time to quality (judge accuracy per attribute; higher is better)",
        "",
        "chance: " + ", ".join(f"{a} {chance[a]:.2f}" for a in ATTRIBUTES),
        "",
        table.to_markdown(index=False, floatfmt=".3g"),
        "",
        "## First checkpoint that reaches each bar",
        "",
        first_reached(table).to_markdown(index=False),
        "",
        f"![curves]({out.with_suffix('.png').name})",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(text))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders whose checkpoints/ to judge")
    parser.add_argument("--train", action="store_true", help="first train the config given by --params/--set")
    add_params_arguments(parser, "TrainConfig", "total_kimg=60 --set run_dir=results/runs/ttq")
    parser.add_argument("--out", type=Path, default=Path("results/time_to_quality"), help="output path stem")
    parser.add_argument("--seed", type=int, default=0, help="first latent seed of the judged images")
    args = parser.parse_args(argv)
    runs = list(args.runs)
    if args.train:
        cfg = load_with_overrides(TrainConfig, args.params, args.overrides)
        train(dataclasses.replace(cfg, keep_last=10_000))  # every snapshot stays, to be judged
        runs.append(Path(cfg.run_dir))
    if not runs:
        parser.error("give run folders, or --train [--params FILE] [--set KEY=VALUE ...]")
    table = report(runs, args.out, args.seed)
    print(first_reached(table).to_markdown(index=False))
    print(f"written: {args.out.with_suffix('.csv')}, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
