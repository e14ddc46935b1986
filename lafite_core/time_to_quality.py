"""Time to quality: how many kimg and training minutes a config needs to draw what it is told.

Every checkpoint of a run folder is read by the independent judge (lafite_core/prompt_following.py:
every attribute combination, seen and held-out). A checkpoint's wall time is the training time
logged in the run's stats.jsonl up to it, so a resumed run counts only time spent training. Judged
checkpoints are remembered in each run's `judge.jsonl`, so judging again, even while a run is still
training, only reads the new ones.

    python -m lafite_core.time_to_quality results/runs/train [more run folders]   # judge and report
    python -m lafite_core.time_to_quality --train --params params/train.yaml --set total_kimg=60 --set run_dir=results/runs/ttq
    python -m lafite_core.runner run params/recipe.yaml --workers 2                 # a recipe sweep

Writes <out>.csv (one row per checkpoint and split), <out>.md (the table and the first kimg and
minutes at which each threshold holds) and <out>.png (the curves, with chance levels). The notebook
also writes metrics.json, which the runner's `collect` turns into a sweep's table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from lafite_core import checkpoint as ckpt
from lafite_core.attribute_classifier import AttributeClassifier, load_attribute_classifier
from lafite_core.config import TimeToQualityConfig, TrainConfig
from lafite_core.params import add_params_arguments, load_with_overrides, run_main
from lafite_core.prompt_following import ATTRIBUTES, JUDGE_VERSION, JUDGE_WEIGHTS, SPLITS, judge, summary_metrics
from lafite_core.reporting import JUDGED_PREFIXES, attribute_chance
from lafite_core.stats import read_stats
from lafite_core.training import train

THRESHOLDS = (
    ("shape", 0.6),
    ("shape", 0.9),
    ("colour", 0.95),
    ("position", 0.9),
    ("all", 0.85),
    ("named_t5", 0.9),
    ("named_a_shape", 0.9),
    ("spread_ratio_t5", 0.8),
)
CURVES = ("shape", "all", "named_t5", "named_a_shape", "spread_ratio_t5", "spread_ratio_a_shape", "confidence")
CURVE_TITLES = {  # every figure is higher-is-better
    "named_t5": '"{colour} {shape}": both right',
    "named_a_shape": '"a {shape}": shape right',
    "spread_ratio_t5": '"{colour} {shape}": spread / real (min)',
    "spread_ratio_a_shape": '"a {shape}": spread / real (min)',
    "confidence": "judge confidence (mean max-softmax)",
}
KEEP_EVERY_SNAPSHOT = 1_000_000  # keep_last for a judged run: every checkpoint stays to be read


def training_minutes(run_dir: Path) -> dict[int, float]:
    """nimg at each logged tick -> training minutes up to it (resumed runs keep the earlier ticks)."""
    minutes, total, previous = {}, 0.0, 0.0
    # s_per_kimg times the tick's kimg is its training time; ticks are logged in order.
    for tick in read_stats(run_dir):
        total += tick["s_per_kimg"] * (tick["kimg"] - previous) / 60
        previous = tick["kimg"]
        minutes[tick["nimg"]] = total
    return minutes


def run_label(run_dir: Path) -> str:
    """A run's name in tables: its sweep case when the runner made it (<run>/out/train), else the folder."""
    spec = run_dir.parent.parent / "spec.json"
    if run_dir.parent.name == "out" and spec.is_file():
        case = json.loads(spec.read_text()).get("label", {}).get("case")
        return case or run_dir.parent.parent.name
    return run_dir.name


def judged_rows(run_dir: Path, seed: int, classifier: AttributeClassifier) -> list[dict]:
    """One row per (checkpoint, split), judging only checkpoints not yet in run_dir/judge.jsonl."""
    label = run_label(run_dir)
    memo_path = run_dir / "judge.jsonl"
    memo = {}
    if memo_path.is_file():
        memo = {
            r["checkpoint"]: r
            for r in map(json.loads, memo_path.read_text().splitlines())
            if r["seed"] == seed and r.get("judge_version") == JUDGE_VERSION
        }
    minutes = training_minutes(run_dir)
    rows = []
    for path in ckpt.list_checkpoints(run_dir / "checkpoints"):
        if path.name not in memo:
            result = judge(path, seed=seed, classifier=classifier)
            memo[path.name] = {"checkpoint": path.name, "seed": seed, **result}
            with open(memo_path, "a") as log:
                log.write(json.dumps(memo[path.name]) + "\n")
            forms = result["forms"]["seen"]
            print(
                f"{label} {result['kimg']:.0f} kimg: all {result['seen']['all']:.2f} "
                f"(held-out {result['heldout']['all']:.2f}), \"colour shape\" {forms['t5']['named']:.2f}, "
                f"\"a shape\" {forms['a_shape']['named']:.2f}, spread {forms['t5']['spread']:.2f}",
                flush=True,
            )
        result = memo[path.name]
        nimg = round(result["kimg"] * 1000)
        flat = summary_metrics(result)
        for which in SPLITS:
            rows.append(
                {
                    "run": label,
                    "kimg": result["kimg"],
                    "minutes": minutes.get(nimg),
                    "prompts": which,
                    **{a: result[which][a] for a in ATTRIBUTES},
                    **{
                        k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith(f"{which}/") and "/acc_" not in k
                    },
                }
            )
    return rows


def first_hit(group: pd.DataFrame, attribute: str, bar: float) -> pd.Series | None:
    """The first checkpoint (by kimg) of one run and split at which `attribute` >= bar; None: never."""
    if attribute not in group.columns:
        return None
    group = group.sort_values("kimg")
    hit = group[group[attribute] >= bar]
    return None if hit.empty else hit.iloc[0]


def first_reached(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and split, the first checkpoint at which each threshold holds (blank: not reached)."""
    records = []
    for (run, which), group in table.groupby(["run", "prompts"], sort=False):
        record = {"run": run, "prompts": which}
        for attribute, bar in THRESHOLDS:
            hit = first_hit(group, attribute, bar)
            record[f"{attribute} >= {bar}"] = "" if hit is None else f"{hit.kimg:.0f} kimg / {hit.minutes:.1f} min"
        records.append(record)
    return pd.DataFrame(records)


def curve_figure(table: pd.DataFrame) -> Figure:
    """Each of CURVES against kimg, and every attribute right against training minutes; a figure's
    chance level (where it has one) as a grey line."""
    chance = attribute_chance()
    runs = list(dict.fromkeys(table["run"]))
    colours = colormaps["tab10" if len(runs) <= 10 else "tab20"]  # one colour per run: seen solid, held-out dashed
    fig = Figure(figsize=(16, 7.5))  # no pyplot: any backend, no global state
    axes = fig.subplots(2, 4, sharey=True).ravel()
    panels = [(figure, "kimg") for figure in CURVES] + [("all", "minutes")]
    for ax, (figure, x) in zip(axes, panels):
        for (run, which), group in table.groupby(["run", "prompts"], sort=False):
            group = group.sort_values("kimg").dropna(subset=[figure])
            if group.empty:
                continue
            style = "-o" if which == "seen" else "--x"
            colour = colours(runs.index(run) % colours.N)
            ax.plot(group[x], group[figure], style, ms=3, color=colour, label=f"{run} ({which})")
        if figure in chance:
            ax.axhline(chance[figure], color="grey", lw=1, ls=":", label="chance")
        ax.set_xlabel("thousands of images shown" if x == "kimg" else "training minutes")
        ax.set_title(CURVE_TITLES.get(figure, f"judge: {figure} accuracy"), fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) // 4), 1, 1))
    return fig


def report(run_dirs: list[Path], out: Path, seed: int = 0) -> pd.DataFrame:
    """Judge every checkpoint of the runs and write <out>.csv, .md and .png."""
    classifier = load_attribute_classifier(JUDGE_WEIGHTS)
    table = pd.DataFrame([row for run_dir in run_dirs for row in judged_rows(run_dir, seed, classifier)])
    if table.empty:
        raise FileNotFoundError(f"no checkpoints to judge under {', '.join(str(r / 'checkpoints') for r in run_dirs)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    curve_figure(table).savefig(out.with_suffix(".png"), dpi=100)
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


def summary(table: pd.DataFrame, run_dir: Path) -> dict:
    """One run's row for a sweep table: the last checkpoint's accuracies per split, the kimg and
    minutes at which each threshold first holds (None: not reached), and the median training speed."""
    metrics: dict = {}
    last_kimg = table.kimg.max()
    for which, group in table.groupby("prompts", sort=False):
        last = group[group.kimg == last_kimg].iloc[0]
        metrics.update({f"{which}/acc_{a}": float(last[a]) for a in ATTRIBUTES})
        figures = [c for c in group.columns if c.startswith(JUDGED_PREFIXES)]  # the per-attribute ones are above
        metrics.update({f"{which}/{c}": None if pd.isna(last[c]) else float(last[c]) for c in figures})
        for attribute, bar in THRESHOLDS:
            hit = first_hit(group, attribute, bar)
            key = f"{attribute}{bar:g}"
            metrics[f"{which}/kimg_to_{key}"] = None if hit is None else float(hit.kimg)
            metrics[f"{which}/minutes_to_{key}"] = None if hit is None else float(hit.minutes)
    metrics["kimg"] = float(last_kimg)
    metrics["minutes"] = float(table.minutes.max())
    metrics["img_per_s"] = statistics.median(t["img_per_s"] for t in read_stats(run_dir))
    return metrics


def train_and_judge(cfg: TimeToQualityConfig) -> dict:
    """Train (resuming if interrupted) keeping every snapshot, judge each one, and write the curve
    (`output_dir/curve.*`) and `output_dir/metrics.json`."""
    out = Path(cfg.output_dir)
    train_cfg = replace(cfg.train, run_dir=str(out / "train"), keep_last=KEEP_EVERY_SNAPSHOT)
    train(train_cfg)
    table = report([Path(train_cfg.run_dir)], out / "curve", cfg.judge_seed)
    metrics = summary(table, Path(train_cfg.run_dir))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lafite_core.time_to_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders whose checkpoints/ to judge")
    parser.add_argument("--train", action="store_true", help="first train the config given by --params/--set")
    add_params_arguments(parser, "TrainConfig", "total_kimg=60 --set run_dir=results/runs/ttq")
    parser.add_argument("--out", type=Path, default=Path("results/time_to_quality"), help="output path stem")
    parser.add_argument("--seed", type=int, default=0, help="first latent seed of the judged images")
    args = parser.parse_args(argv)
    runs = list(args.runs)
    if args.train:
        cfg = load_with_overrides(TrainConfig, args.params, args.overrides)
        train(replace(cfg, keep_last=KEEP_EVERY_SNAPSHOT))
        runs.append(Path(cfg.run_dir))
    if not runs:
        parser.error("give run folders, or --train [--params FILE] [--set KEY=VALUE ...]")
    table = report(runs, args.out, args.seed)
    print(first_reached(table).to_markdown(index=False))
    print(f"written: {args.out.with_suffix('.csv')}, .md, .png")
    return 0


if __name__ == "__main__":
    run_main(main)
