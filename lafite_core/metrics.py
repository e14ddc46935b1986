"""What the kit measures about a text-to-image generator, and how results are written down.

Two parts, each small (the protocols they run under are `config.ProtocolConfig` and its presets):

1. **Metrics** (`METRICS`): each entry names the extracted features it reads and whether it
   compares against the reference set, and computes one or more numbers from a `ScoredImages`.
   The feature-distance maths is torch-fidelity's own (FID, KID, IS), so the numbers match what
   `fidelity --fid ...` prints on the same features:
   - `fid`, `kid`, `is`: Inception-v3 features (pool3, 2048-d) and logits;
   - `clip_fid`, `clip_kid`: the same distances in a CLIP image-feature space;
   - `clip_score`: 100 x mean cosine between each image and its prompt (evaluation CLIP);
   - `r_precision`: how often an image's own prompt beats 99 other captions of the set;
   - `caption_accuracy`: the share of images whose attributes, read by the independent Shapes
     classifier (attribute_classifier.py), all match what the caption asks for.
2. **Result rows** (`append_rows`, `read_table`): one row per (subject, checkpoint, protocol,
   split), appended to `results/<table>.csv` and re-rendered as `results/<table>.md`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

from lafite_core.config import ProtocolConfig
from lafite_core.registry import Registry
from lafite_core.reporting import better, with_arrow


# ==================================================================================== metrics
@dataclass
class ScoredImages:
    """What the metrics read about one set of N images (generated or real).

    `features` maps a feature name (see features.FEATURES) to [N, d]; "attributes" holds the
    classifier's predicted value index per attribute, [N, k]. `prompt_ids` index each image's
    prompt in `prompt_features` (the evaluation CLIP's features of the distinct prompts), so
    R-precision can draw other captions of the set as distractors. `targets` [N, k] is the value
    index each caption asks for, -1 where the caption does not mention that attribute."""

    features: dict[str, Tensor]
    prompt_ids: Tensor | None = None
    prompt_features: Tensor | None = None
    targets: Tensor | None = None
    attribute_names: tuple[str, ...] = ()


MetricFn = Callable[[ScoredImages, "dict[str, Tensor] | None", ProtocolConfig], "dict[str, float | None]"]


@dataclass(frozen=True)
class Metric:
    """A registry entry: `compute(images, reference_features, protocol)` -> {column: value}."""

    name: str
    features: tuple[str, ...]
    uses_reference: bool
    compute: MetricFn
    needs: tuple[str, ...] = field(default=())  # other inputs: "prompts", "targets"


METRICS: Registry[Metric] = Registry("metric")


def _register(name: str, features: tuple[str, ...], uses_reference: bool = False, needs: tuple[str, ...] = ()):
    def decorator(fn: MetricFn) -> MetricFn:
        METRICS.register(name, Metric(name, features, uses_reference, fn, needs))
        return fn

    return decorator


# ----------------------------------------------------------------------- distances (torch-fidelity)
def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """FID (Heusel et al. 2017): ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussians
    fitted to two feature sets, computed in float64 by torch-fidelity's own routine."""
    _check_pair(features_a, features_b, minimum=2)
    stats_a = fid_features_to_statistics(features_a.double().cpu())
    stats_b = fid_features_to_statistics(features_b.double().cpu())
    return fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID]


def kernel_distance(
    features_a: Tensor, features_b: Tensor, subsets: int, subset_size: int, seed: int
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, averaged over
    `subsets` random subsets of `subset_size` from each side; returns (mean, std)."""
    _check_pair(features_a, features_b, minimum=subset_size)
    out = kid_features_to_metric(
        features_a.double().cpu(),
        features_b.double().cpu(),
        kid_subsets=subsets,
        kid_subset_size=subset_size,
        rng_seed=seed,
        verbose=False,
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def inception_score(logits: Tensor, splits: int, seed: int) -> tuple[float, float]:
    """IS (Salimans et al. 2016): exp E[KL(p(y|x) || p(y))] over `splits` shuffled splits; (mean, std)."""
    if len(logits) < splits:
        raise ValueError(f"inception score with {splits} splits needs at least {splits} images, got {len(logits)}")
    out = isc_features_to_metric(logits.cpu(), splits=splits, shuffle=True, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def _check_pair(a: Tensor, b: Tensor, minimum: int) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be [N, d] with the same d, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(len(a), len(b)) < minimum:
        raise ValueError(f"need at least {minimum} features on each side, got {len(a)} and {len(b)}")


# --------------------------------------------------------------------------- text alignment
def clip_score(image_features: Tensor, text_features: Tensor) -> float:
    """100 x the mean cosine between each image and its own prompt (rows matched).

    (This is the plain form; the CLIPScore paper's variant clips at 0 and scales by 2.5.)"""
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image and text features must pair up, got {tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    cos = torch.nn.functional.cosine_similarity(image_features.float(), text_features.float(), dim=1)
    return 100.0 * float(cos.mean())


def r_precision(
    image_features: Tensor, prompt_ids: Tensor, prompt_features: Tensor, candidates: int, seed: int
) -> float:
    """R-precision with R = 1 (as in AttnGAN / DM-GAN / XMC-GAN): for each image, its prompt and
    `candidates - 1` other distinct prompts of the set, drawn at random, are ranked by cosine with
    the image; the score is the share of images whose own prompt ranks first (strictly).
    A set with fewer distinct prompts uses all of them as distractors (chance = 1 / candidates)."""
    n, p = len(image_features), len(prompt_features)
    if p < 2:
        raise ValueError("R-precision needs at least 2 distinct prompts in the set")
    k = min(candidates - 1, p - 1)
    images = torch.nn.functional.normalize(image_features.float(), dim=1)
    texts = torch.nn.functional.normalize(prompt_features.float(), dim=1)
    g = torch.Generator().manual_seed(seed)
    hits = 0
    rows_per_chunk = max(1, 4_000_000 // p)
    for start in range(0, n, rows_per_chunk):
        ids = prompt_ids[start : start + rows_per_chunk].long().cpu()
        sims = images[start : start + len(ids)].cpu() @ texts.T  # [B, P]
        own = sims.gather(1, ids[:, None])
        # k distinct distractors among the p - 1 other prompts: random ranks, shifted past the own id
        others = torch.rand(len(ids), p - 1, generator=g).topk(k, dim=1).indices
        others = others + (others >= ids[:, None]).long()
        hits += int((own > sims.gather(1, others)).all(dim=1).sum())
    return hits / n


def caption_accuracy(predicted: Tensor, targets: Tensor, attribute_names: tuple[str, ...]) -> dict[str, float | None]:
    """Share of images whose every attribute named by their caption is read as asked
    (`caption_accuracy`), and per attribute the share right among the images whose caption names
    it (`acc_<attribute>`, None when no caption names it). targets = -1 marks "not named"."""
    if predicted.shape != targets.shape or predicted.shape[1] != len(attribute_names):
        raise ValueError(
            f"predictions {tuple(predicted.shape)} and targets {tuple(targets.shape)} must be "
            f"[N, {len(attribute_names)}]"
        )
    named = targets >= 0
    right = (predicted == targets) | ~named
    out: dict[str, float | None] = {"caption_accuracy": float(right.all(dim=1).float().mean())}
    for j, name in enumerate(attribute_names):
        count = int(named[:, j].sum())
        out[f"acc_{name}"] = float(right[named[:, j], j].float().mean()) if count else None
    return out


# ---------------------------------------------------------------------------- registry entries
def _register_distances(prefix: str, feature: str) -> None:
    """FID and KID between generated and reference images in one feature space (Inception or CLIP)."""

    @_register(f"{prefix}fid", (feature,), uses_reference=True)
    def _fid(images: ScoredImages, reference, protocol: ProtocolConfig):
        return {f"{prefix}fid": frechet_distance(images.features[feature], reference[feature])}

    @_register(f"{prefix}kid", (feature,), uses_reference=True)
    def _kid(images: ScoredImages, reference, protocol: ProtocolConfig):
        mean, std = kernel_distance(
            images.features[feature], reference[feature], protocol.kid_subsets, protocol.kid_subset_size, protocol.seed
        )
        return {f"{prefix}kid": mean, f"{prefix}kid_std": std}


_register_distances("", "inception_pool")


@_register("is", ("inception_logits",))
def _is(images: ScoredImages, reference, protocol: ProtocolConfig):
    mean, std = inception_score(images.features["inception_logits"], protocol.isc_splits, protocol.seed)
    return {"is": mean, "is_std": std}


_register_distances("clip_", "clip_image")


@_register("clip_score", ("clip_image",), needs=("prompts",))
def _clip_score(images: ScoredImages, reference, protocol: ProtocolConfig):
    text = images.prompt_features[images.prompt_ids]
    return {"clip_score": clip_score(images.features["clip_image"], text)}


@_register("r_precision", ("clip_image",), needs=("prompts",))
def _r_precision(images: ScoredImages, reference, protocol: ProtocolConfig):
    return {
        "r_precision": r_precision(
            images.features["clip_image"],
            images.prompt_ids,
            images.prompt_features,
            protocol.r_precision_candidates,
            protocol.seed,
        )
    }


@_register("caption_accuracy", ("attributes",), needs=("targets",))
def _caption_accuracy(images: ScoredImages, reference, protocol: ProtocolConfig):
    return caption_accuracy(images.features["attributes"], images.targets, images.attribute_names)


def compute_metrics(
    names: list[str], images: ScoredImages, reference: dict[str, Tensor] | None, protocol: ProtocolConfig
) -> dict[str, float | None]:
    """Every named metric's columns, in the order the names are given."""
    values: dict[str, float | None] = {}
    for name in names:
        values.update(METRICS.get(name).compute(images, reference, protocol))
    return values


# ================================================================================ result rows
def protocol_columns(protocol: ProtocolConfig) -> dict[str, Any]:
    """The protocol as row columns: `protocol` (its name) and every other field by its own name."""
    fields = dataclasses.asdict(protocol)
    return {"protocol": fields.pop("name"), **fields}


def append_rows(rows: list[dict[str, Any]], table: str, results_dir: str | Path = "results") -> tuple[Path, Path]:
    """Append rows to `<results_dir>/<table>.csv` (columns: the union of old and new, in order of
    first appearance) and rewrite `<table>.md` from the whole CSV. Both files are replaced
    atomically, so a crash never leaves half a table."""
    if not rows:
        raise ValueError("append_rows: no rows to append")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = results_dir / f"{table}.csv", results_dir / f"{table}.md"
    old = read_table(table, results_dir) if csv_path.is_file() else []
    all_rows = old + [{k: _cell(v) for k, v in row.items()} for row in rows]
    columns = list(dict.fromkeys(k for row in all_rows for k in row))
    _atomic_write(csv_path, _csv_text(all_rows, columns))
    _atomic_write(md_path, markdown_table(read_table(table, results_dir), metrics_first(columns), arrows=True))
    return csv_path, md_path


ROW_LABELS = ("subject", "eval_split")  # what a row is, shown before its metrics


def metrics_first(columns: list[str]) -> list[str]:
    """The row labels, then the metric columns (with their _std), then the protocol and the rest:
    a reader sees the numbers without scrolling past the protocol."""

    def is_metric(column: str) -> bool:
        return better(column.removesuffix("_std")) is not None

    labels = [c for c in columns if c in ROW_LABELS]
    metrics = [c for c in columns if c not in ROW_LABELS and is_metric(c)]
    return labels + metrics + [c for c in columns if c not in labels and c not in metrics]


def read_table(table: str, results_dir: str | Path = "results") -> list[dict[str, str]]:
    """The rows of `<results_dir>/<table>.csv` as dicts of strings (empty string = no value)."""
    path = Path(results_dir) / f"{table}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"results table not found: {path}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def markdown_table(rows: list[dict[str, str]], columns: list[str], arrows: bool = False) -> str:
    """A GitHub pipe table of CSV rows (strings); decimals shown with 4 significant digits; `arrows`
    marks each metric's header with the way it improves (↑ or ↓)."""

    def fmt(text: str | None) -> str:
        text = "" if text is None else str(text)
        try:
            number = float(text)
        except ValueError:
            return text.replace("|", "\\|")
        is_decimal = any(ch in text for ch in ".eE") or text.lower() in ("nan", "inf", "-inf")
        return f"{number:.4g}" if is_decimal else text

    headers = [with_arrow(c) for c in columns] if arrows else columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (list, tuple, dict)):
        return str(value)
    return value


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
