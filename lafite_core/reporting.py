"""Results as a person reads them: which way each metric improves, what chance scores, a one-line
verdict, and a sweep's table and plot with only the case and its metrics. The CSV files keep every
column; the Markdown tables and plots made here are for reading.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from lafite_core.data.shapes import VOCABULARIES

LOWER_IS_BETTER = ("fid", "kid", "clip_fid", "clip_kid")
HIGHER_IS_BETTER = ("is", "clip_score", "r_precision", "caption_accuracy")
HEADLINE_METRICS = (
    *("clip_fid", "clip_kid", "clip_score", "r_precision", "caption_accuracy", "fid", "kid", "is"),
    *("acc_shape", "acc_all", "kimg_to_shape0.6", "minutes_to_shape0.6"),  # time to quality's judge (Shapes)
    *("named_t5", "named_a_shape", "spread_ratio_t5", "spread_ratio_a_shape", "confidence"),  # short prompts
)
JUDGED_PREFIXES = ("acc_", "named_", "spread_ratio_", "confidence")  # the Shapes judge's figures: higher is better
NAMED_CHANCE = {  # a uniform guess names colour and shape right 1 time in 48, the shape alone 1 in 6
    "named_t5": 1 / (len(VOCABULARIES["colour"]) * len(VOCABULARIES["shape"])),
    "named_a_shape": 1 / len(VOCABULARIES["shape"]),
}
COST_PREFIXES = ("kimg_to_", "minutes_to_")  # how long a run took to reach a bar: lower is better
R_PRECISION_CANDIDATES = 100  # ProtocolConfig's default, for tables that do not record theirs
NOT_LABELS = {"run_id", "status"}


def metric_name(column: str) -> str:
    """`heldout/r_precision` -> `r_precision`."""
    return column.rsplit("/", 1)[-1]


def better(column: str) -> str | None:
    """ "higher" or "lower" (which way the metric improves), None for a column that is not a metric."""
    name = metric_name(column)
    if name in LOWER_IS_BETTER or name.startswith(COST_PREFIXES):
        return "lower"
    if name in HIGHER_IS_BETTER or name.startswith(JUDGED_PREFIXES):
        return "higher"
    return None


def with_arrow(column: str) -> str:
    """The column name with ↑ (higher is better) or ↓ (lower is better)."""
    way = better(column)
    return f"{column} {'↑' if way == 'higher' else '↓'}" if way else column


def attribute_chance() -> dict[str, float]:
    """Accuracy of a generator that ignores the prompt (uniform guess per Shapes attribute); `all`: every one."""
    chance = {name: 1 / len(values) for name, values in VOCABULARIES.items()}
    return {**chance, "all": math.prod(chance.values())}


def chance(column: str, candidates: int = R_PRECISION_CANDIDATES) -> float | None:
    """What a generator that ignores its prompt scores, where that is known without measuring:
    R-precision 1 / candidates, the Shapes attribute accuracies a uniform guess. None otherwise (the
    distances have no chance level; the shuffled-conditions baseline measures one)."""
    name = metric_name(column)
    if name == "r_precision":
        return 1 / candidates
    if name == "caption_accuracy":
        return attribute_chance()["all"]
    if name.startswith("acc_"):
        return attribute_chance().get(name[4:])
    return NAMED_CHANCE.get(name)


# ---------------------------------------------------------------------------------------- sweeps
def label_columns(table: pd.DataFrame) -> list[str]:
    """What tells runs apart: `case` when the sweep names its cases, else the swept keys."""
    if "case" in table.columns and table["case"].notna().all() and table["case"].is_unique:
        return ["case"]
    return [c for c in table.columns if c == "case" or "." in c or c == "seed"]


def headline_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns worth reading, split by split (spreads and per-attribute accuracies stay in
    the CSV); a table without any of the kit's metrics shows all its numbers but spreads."""
    numeric = [
        c
        for c in table.columns
        if c not in NOT_LABELS
        and c not in label_columns(table)
        and not c.endswith("_std")
        and table[c].dtype.kind in "if"
        and table[c].notna().any()
    ]
    return [c for c in numeric if metric_name(c) in HEADLINE_METRICS] or numeric


def readable_table(table: pd.DataFrame, candidates: int = R_PRECISION_CANDIDATES) -> pd.DataFrame:
    """The case and its headline metrics (arrows in the header), a chance row first."""
    labels, metrics = label_columns(table), headline_columns(table)
    out = table[labels + metrics].copy()
    chance_row = {**{label: "chance" if i == 0 else "" for i, label in enumerate(labels)}}
    chance_row.update({c: chance(c, candidates) for c in metrics})
    out = pd.concat([pd.DataFrame([chance_row]), out], ignore_index=True)
    return out.rename(columns=with_arrow)


def run_names(table: pd.DataFrame) -> list[str]:
    labels = label_columns(table)
    if not labels:
        return list(table["run_id"])
    return [" ".join(str(v) for v in row if not pd.isna(v)) for row in table[labels].itertuples(index=False)]


def verdict(table: pd.DataFrame, candidates: int = R_PRECISION_CANDIDATES) -> str:
    """One line: the best run on the sweep's main alignment metric, against chance."""
    metrics = headline_columns(table)
    preferred = [
        c
        for name in ("caption_accuracy", "acc_all", "r_precision", "clip_score")
        for c in metrics
        if metric_name(c) == name
    ]
    if not preferred:
        return "No metric to compare."
    column = sorted(preferred, key=lambda c: c.startswith("heldout/"), reverse=True)[0]  # held-out prompts first
    values = table[column].astype(float)
    best = int(values.idxmax())
    level = chance(column, candidates)
    against = f", chance {level:.3g}" if level is not None else ""
    return (
        f"Best on {column} (higher is better): {run_names(table)[best]} with {values[best]:.3g}{against}; "
        f"worst {run_names(table)[int(values.idxmin())]} with {values.min():.3g}."
    )


def sweep_markdown(table: pd.DataFrame, candidates: int = R_PRECISION_CANDIDATES) -> str:
    """The verdict line and the readable table, as Markdown."""
    body = readable_table(table, candidates).to_markdown(index=False, floatfmt=".4g")
    return f"{verdict(table, candidates)}\n\n{body}\n"


def plot_sweep(table: pd.DataFrame, path: Path, candidates: int = R_PRECISION_CANDIDATES) -> Path | None:
    """sweep_figure saved as a PNG (None when the table has no numbers)."""
    fig = sweep_figure(table, candidates)
    if fig is None:
        return None
    fig.savefig(path, dpi=100)
    return path


def sweep_figure(table: pd.DataFrame, candidates: int = R_PRECISION_CANDIDATES) -> Figure | None:
    """One panel per headline metric (y-label with its arrow, chance as a dashed line), one bar per
    run, the splits of a metric side by side; the legend sits below the panels, over nothing."""
    panels: dict[str, list[str]] = {}
    for column in headline_columns(table):
        panels.setdefault(metric_name(column), []).append(column)
    if not panels:
        return None
    names = run_names(table)
    columns = min(3, len(panels))
    grid_rows = -(-len(panels) // columns)
    width = max(4.0, 0.55 * len(table) + 1.5)
    fig = Figure(figsize=(width * columns, 3.0 * grid_rows + 0.6))  # no pyplot: any backend, no global state
    axes = fig.subplots(grid_rows, columns, squeeze=False)
    handles: dict[str, object] = {}  # legend entry -> an artist drawn in its style
    splits_seen: list[str] = []  # one colour per split in every panel
    for ax, (metric, splits) in zip(axes.flat, panels.items()):
        bar = 0.8 / len(splits)
        for k, column in enumerate(splits):
            offsets = [i + (k - (len(splits) - 1) / 2) * bar for i in range(len(table))]
            split = column.split("/")[0] if "/" in column else "value"
            if split not in splits_seen:
                splits_seen.append(split)
            colour = f"C{splits_seen.index(split)}"
            handles[split] = ax.bar(offsets, table[column].astype(float), bar, color=colour)
        level = chance(metric, candidates)
        if level is not None:
            handles["chance"] = ax.axhline(level, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{metric} ({better(metric)} is better)" if better(metric) else metric, fontsize=9)
        ax.set_ylabel(with_arrow(metric), fontsize=8)
        ax.set_xticks(range(len(table)), names, rotation=30, ha="right", fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if len(handles) > 1:
        fig.legend(
            list(handles.values()), list(handles), loc="lower center", ncol=len(handles), fontsize=8, frameon=False
        )
    fig.tight_layout(rect=(0, 0.06 if len(handles) > 1 else 0, 1, 1))
    return fig
