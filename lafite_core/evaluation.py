"""Generate and score: evaluating a trained generator under a stated protocol.

    rows = evaluate(params.load_yaml("params/evaluate.yaml", EvalConfig))  # lafite_core.params

For each evaluated split (`data.split`, then `heldout_split`), and each subject (the model, then
the baselines), the pipeline

1. plans the prompts: sample k gets a caption of eval item k mod N (caption number k // N), the
   paper's "one caption per image, cycling through the set";
2. makes the images in batches (progress bar): the generator fed the training CLIP's text feature
   of each prompt, latent k from seed `protocol.seed + k`; or, for the baselines, real images of
   the split that are not in the reference set ("real": the upper bound) or the generator fed
   the prompts' conditions in shuffled order ("shuffled": images as good as the model's but
   unrelated to their prompts, the lower bound of every alignment metric; its FID and KID equal
   the model's up to noise, a built-in sanity check);
3. extracts the features the chosen metrics read (Inception through torch-fidelity, the
   evaluation CLIP through a torch-fidelity feature extractor registered for it, the Shapes
   attribute classifier), computes the metrics (lafite_core.metrics) against the reference
   features, which are cached per (reference set, feature extractor) under `stats_cache`;
4. appends one row per (subject, split) with every protocol field to results/<table>.csv/.md.

Images are scored as uint8 [N, 3, R, R] at `protocol.resolution`, the form torch-fidelity's
extractors take, so generated and real images go through exactly the same quantisation.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from lafite_core.assets import DEMO_GENERATOR, REPO_PREFIX, resolve_asset
from lafite_core.config import EvalConfig, ProtocolConfig, protocol_preset
from lafite_core.data import dataset_from_config
from lafite_core.data.shapes import ATTRIBUTE_NAMES, VOCABULARIES, ShapesDataset, caption_attributes, captions_for
from lafite_core.encoders import encoder_device, file_sha256, load_encoder
from lafite_core.features import (
    FEATURES,
    FeatureExtractor,
    attribute_extractor,
    clip_extractor,
    encoder_fingerprint,
    extract,
    inception_extractor,
    reference_features,
)
from lafite_core.grids import from_uint8, latents, save_image_grid, to_uint8
from lafite_core.metrics import METRICS, ScoredImages, append_rows, compute_metrics, protocol_columns
from lafite_core.params import INPUT_ERRORS, add_params_arguments, command_parser, load_with_overrides, run_main
from lafite_core.precision import resolve_device
from lafite_core.run_lock import RunLock
from lafite_core.sampler import Sampler

SUBJECTS = {"model": "model", "real": "real images", "shuffled": "shuffled conditions"}
TEXT_BATCH = 256


# ======================================================================================= prompts
@dataclass
class Prompts:
    """What each image should show: its caption, the eval item it came from, and (Shapes) the
    attribute values the caption asks for ([N, k], -1 where the caption does not say)."""

    captions: list[str]
    items: list[int]
    targets: Tensor | None = None


MIN_FOLDER_IMAGES = 20  # the fewest images the default protocol halves into a reference set and real images
MIN_REAL_IMAGES = 2  # the real-images baseline's fewest images


def item_captions(dataset, index: int) -> list[str]:
    """Captions of item `index` without decoding its image where the dataset allows."""
    if isinstance(dataset, ShapesDataset):
        return captions_for(dataset.attributes(index))
    records = getattr(dataset, "records", None)
    if records is not None:
        return list(records[index].captions)
    return list(dataset[index].captions)


def plan_prompts(dataset, indices: list[int], num_samples: int) -> Prompts:
    """Sample k: item indices[k mod N], its caption number (k // N) mod (its caption count)."""
    captioned = [(i, item_captions(dataset, i)) for i in indices]
    captioned = [(i, caps) for i, caps in captioned if caps]
    if not captioned:
        raise ValueError("the evaluation set has no captioned items: prompts come from its captions")
    n = len(captioned)
    captions, items, choice = [], [], []
    for k in range(num_samples):
        index, caps = captioned[k % n]
        c = (k // n) % len(caps)
        captions.append(caps[c])
        items.append(index)
        choice.append(c)
    return Prompts(captions, items, shapes_targets(dataset, items, choice))


def shapes_targets(dataset, items: list[int], caption_numbers: list[int]) -> Tensor | None:
    """[N, k] value index each caption asks for (-1: not named); None for non-Shapes datasets."""
    if not isinstance(dataset, ShapesDataset):
        return None
    named = caption_attributes()
    targets = torch.full((len(items), len(ATTRIBUTE_NAMES)), -1, dtype=torch.long)
    for row, (index, c) in enumerate(zip(items, caption_numbers)):
        attributes = dataset.attributes(index)
        for j, name in enumerate(ATTRIBUTE_NAMES):
            if name in named[c]:
                targets[row, j] = VOCABULARIES[name].index(attributes[name])
    return targets


@torch.no_grad()
def encode_prompts(encoder, captions: list[str]) -> tuple[Tensor, Tensor]:
    """(ids [N], features [P, f]): each caption's index among the distinct captions, and the
    encoder's features of the distinct captions (each encoded once)."""
    distinct = list(dict.fromkeys(captions))
    position = {c: i for i, c in enumerate(distinct)}
    ids = torch.tensor([position[c] for c in captions], dtype=torch.long)
    features = torch.cat(
        [encoder.encode_text(distinct[i : i + TEXT_BATCH]).float().cpu() for i in range(0, len(distinct), TEXT_BATCH)]
    )
    return ids, features


@torch.no_grad()
def generated_batches(G, conditions: Tensor, protocol: ProtocolConfig, device: torch.device) -> Iterator[Tensor]:
    """G(z_k, c_k) for every condition row k, in batches, as uint8 at the protocol's resolution.
    With noise_mode "random" the noise comes from a generator seeded by the protocol (forked, so
    the caller's random state is left alone). Latent k comes from seed protocol.seed + k alone
    (sampler.latents), so the images do not depend on the batch size."""

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(protocol.seed)
        for start in range(0, len(conditions), protocol.batch_size):
            c = conditions[start : start + protocol.batch_size].to(device)
            z = latents(protocol.seed + start, len(c), G.z_dim).to(device)
            images = G(z, c, truncation_psi=protocol.truncation_psi, noise_mode=protocol.noise_mode)
            yield to_uint8(images, protocol.resolution)


def dataset_batches(dataset, indices: list[int], batch_size: int, device: torch.device) -> Iterator[Tensor]:
    """Real images of `dataset` (uint8 HWC items) as uint8 [B, 3, R, R] batches."""
    for start in range(0, len(indices), batch_size):
        arrays = np.stack([dataset[i].image for i in indices[start : start + batch_size]])
        yield torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous().to(device)


# ==================================================================================== evaluation
@dataclass
class Context:
    """Everything built once per evaluation and shared by its splits."""

    cfg: EvalConfig
    device: torch.device
    sampler: object  # lafite_core.sampler.Sampler: G and the training CLIP
    eval_encoder: object | None
    extractors: dict[str, FeatureExtractor]
    progress: bool


def needed_features(metric_names: list[str]) -> list[str]:
    return list(dict.fromkeys(f for n in metric_names for f in METRICS.get(n).features))


def build_context(cfg: EvalConfig, progress: bool = True, encoder=None) -> Context:
    """Load the generator, its training CLIP, the evaluation CLIP and the extractors the metrics
    need, checking every choice before any image is made. `encoder` overrides the training CLIP
    stored with the generator (tests: a randomly initialised one)."""
    for name in cfg.metrics:
        METRICS.get(name)  # unknown names fail here, listing the known ones
    if "caption_accuracy" in cfg.metrics and cfg.data.kind != "shapes":
        raise ValueError(
            f"parameter metrics: caption_accuracy reads Shapes attributes, but data.kind = "
            f"{cfg.data.kind!r}; drop it for this dataset"
        )
    device = resolve_device(cfg.device)
    try:
        sampler = Sampler.load(cfg.checkpoint, device, encoder=encoder)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"parameter checkpoint = {cfg.checkpoint!r}: {err}") from None
    features = needed_features(cfg.metrics)
    needs_text = any("prompts" in METRICS.get(n).needs for n in cfg.metrics)
    eval_encoder = None
    if "clip_image" in features or needs_text:
        enc_cfg = cfg.eval_encoder
        weights = resolve_asset(enc_cfg.pretrained)
        same = (
            enc_cfg.name == sampler.encoder.name
            and sampler.encoder.weights_sha256 is not None
            and weights is not None
            and Path(weights).is_file()
            and file_sha256(Path(weights)) == sampler.encoder.weights_sha256
        )
        try:
            encoder_device(enc_cfg.device, device)  # beside the generator; a conflicting device fails
            eval_encoder = sampler.encoder if same else load_encoder(enc_cfg, run_device=device)
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            raise type(err)(f"parameter eval_encoder: {err}") from None
    extractors: dict[str, FeatureExtractor] = {}
    kinds = dict.fromkeys(FEATURES[f] for f in features)
    if "attributes" in kinds:
        extractors["attributes"] = attribute_extractor(cfg.attribute_classifier, device)
    if "clip" in kinds:
        extractors["clip"] = clip_extractor(eval_encoder, device)
    if "inception" in kinds:
        extractors["inception"] = inception_extractor(cfg.inception_weights, device)
    return Context(cfg, device, sampler, eval_encoder, extractors, progress)


def shipped_generator_if_untrained(cfg: EvalConfig) -> EvalConfig:
    """`cfg` with the kit's shipped generator when its checkpoint is the default run folder and no run
    is there yet (a fresh clone's 04_evaluate), saying so; any other checkpoint is kept as given."""
    if cfg.checkpoint != EvalConfig.checkpoint or Path(cfg.checkpoint).exists():
        return cfg
    shipped = REPO_PREFIX + DEMO_GENERATOR.name
    print(f"No run in {cfg.checkpoint} yet: evaluating the shipped generator {shipped} instead.", flush=True)
    return dataclasses.replace(cfg, checkpoint=shipped)


def evaluate(cfg: EvalConfig, progress: bool = True, encoder=None) -> list[dict]:
    """Evaluate `cfg.checkpoint` on every split; append the rows to the results table, write
    `output_dir/metrics.json` (the model's numbers per split) and sample grids; return the rows.
    `output_dir` is locked meanwhile: a second evaluation into it fails at once."""
    with RunLock(cfg.output_dir, "evaluation"):
        return _evaluate(cfg, progress, encoder)


def _evaluate(cfg: EvalConfig, progress: bool, encoder) -> list[dict]:
    ctx = build_context(cfg, progress, encoder)
    splits = [cfg.data.split] + ([cfg.heldout_split] if cfg.heldout_split else [])
    datasets = {}
    for split in splits:  # every split is opened before the first image is made
        try:
            datasets[split] = dataset_from_config(dataclasses.replace(cfg.data, split=split))
        except (ValueError, FileNotFoundError) as err:
            where = "data.split" if split == cfg.data.split else "heldout_split"
            raise type(err)(f"parameter {where} = {split!r}: {err}") from None
    rows, grids = [], {}
    for split, eval_set in datasets.items():
        split_rows, grids[split] = evaluate_split(ctx, split, eval_set)
        rows += split_rows
    csv_path, _ = append_rows(rows, cfg.table, cfg.results_dir)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, images in grids.items():
        save_image_grid(from_uint8(images), 8, out / f"samples-{split}.png")
    summary = {"checkpoint": rows[0]["checkpoint"], "kimg": rows[0]["kimg"], "table": str(csv_path)}
    short = {label: key for key, label in SUBJECTS.items()}
    for row in rows:
        subject = short[row["subject"]]
        prefix = row["eval_split"] if subject == "model" else f"{row['eval_split']}/{subject}"
        summary.update({f"{prefix}/{k}": row[k] for k in metric_columns(row)})
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return rows


def metric_columns(row: dict) -> list[str]:
    """The metric columns of a row (everything after the `seconds` column)."""
    keys = list(row)
    return keys[keys.index("seconds") + 1 :]


def sized_protocol(cfg: EvalConfig, available: int, own_reference: bool) -> ProtocolConfig:
    """The protocol for a reference split of `available` images. The default protocol meets a small
    folder by halving it (reference set, then the real-images baseline) and saying so; a named
    protocol, or a Shapes split, too small for its reference set is an error naming what to set."""
    protocol = cfg.protocol
    needed = protocol.reference_size + (MIN_REAL_IMAGES if own_reference and "real" in cfg.baselines else 0)
    if available >= needed:
        return protocol
    if cfg.data.kind == "shapes":
        fix = f"raise data.size or lower protocol.reference_size (split holds {available} images)"
    elif protocol.name != ProtocolConfig.name or not own_reference or available < MIN_FOLDER_IMAGES:
        fix = (
            f"the data holds {available} images: lower protocol.reference_size and protocol.kid_subset_size "
            f"(at most reference_size), or give at least {needed} images; the default protocol adapts itself "
            f"to {MIN_FOLDER_IMAGES} or more"
        )
    else:
        reference = available // 2
        subset = min(protocol.kid_subset_size, reference, available - reference, protocol.num_samples)
        print(
            f"note: {available} images: the reference set is the first {reference} (protocol.reference_size), "
            f"KID subsets hold {subset} (protocol.kid_subset_size); numbers compare only at the same sizes",
            flush=True,
        )
        return dataclasses.replace(protocol, reference_size=reference, kid_subset_size=subset)
    raise ValueError(f"parameter protocol.reference_size = {protocol.reference_size} needs {needed} images; {fix}")


def evaluate_split(ctx: Context, split: str, eval_set) -> tuple[list[dict], Tensor]:
    """Rows for the model and each baseline on one split, and the model's first 64 images."""
    cfg = ctx.cfg
    ref_split = cfg.protocol.reference_split or split
    ref_set = eval_set if ref_split == split else dataset_from_config(dataclasses.replace(cfg.data, split=ref_split))
    protocol = sized_protocol(cfg, len(ref_set), own_reference=ref_set is eval_set)
    reference = None
    ref_names = needed_features([n for n in cfg.metrics if METRICS.get(n).uses_reference])
    if ref_names:
        ref_items = list(range(protocol.reference_size))
        reference_id = {
            "dataset": ref_set.fingerprint(),
            "items": [0, protocol.reference_size],
            "resolution": protocol.resolution,
        }
        reference = reference_features(
            lambda: dataset_batches(ref_set, ref_items, protocol.batch_size, ctx.device),
            len(ref_items),
            ctx.extractors,
            ref_names,
            reference_id,
            cfg.stats_cache,
            ctx.progress,
        )

    prompts = plan_prompts(eval_set, list(range(len(eval_set))), protocol.num_samples)
    cond_ids, cond_distinct = encode_prompts(ctx.sampler.encoder, prompts.captions)
    conditions = cond_distinct[cond_ids]  # the training CLIP's text features: the generator's input

    subjects: list[tuple[str, Prompts, Callable[[], Iterator[Tensor]]]] = [
        ("model", prompts, lambda: generated_batches(ctx.sampler.G, conditions, protocol, ctx.device))
    ]
    if "shuffled" in cfg.baselines:
        order = torch.randperm(len(conditions), generator=torch.Generator().manual_seed(protocol.seed + 1))
        subjects.append(
            ("shuffled", prompts, lambda: generated_batches(ctx.sampler.G, conditions[order], protocol, ctx.device))
        )
    if "real" in cfg.baselines:
        start = protocol.reference_size if ref_set is eval_set else 0
        real_items = list(range(start, min(len(eval_set), start + protocol.num_samples)))
        if len(real_items) < 2:
            raise ValueError(
                f"baseline 'real' needs images of split {split!r} outside the reference set, but "
                f"its {len(eval_set)} images are all reference images; lower protocol.reference_size or set "
                f"protocol.reference_split"
            )
        real_prompts = plan_prompts(eval_set, real_items, len(real_items))
        subjects.append(
            ("real", real_prompts, lambda: dataset_batches(eval_set, real_items, protocol.batch_size, ctx.device))
        )

    rows, grid = [], None
    for subject, subject_prompts, batches in subjects:
        started = time.time()
        desc = f"{split}: {SUBJECTS[subject]}"
        kept: list[Tensor] = []

        def keep_first(stream: Iterator[Tensor]) -> Iterator[Tensor]:
            for batch in stream:
                if subject == "model" and sum(len(b) for b in kept) < 64:
                    kept.append(batch.cpu())
                yield batch

        features = extract(
            keep_first(batches()), ctx.extractors.values(), len(subject_prompts.captions), desc, ctx.progress
        )
        scored = _scored(ctx, features, subject_prompts)
        values = compute_metrics(cfg.metrics, scored, reference, protocol)
        if subject == "model":
            grid = torch.cat(kept)[:64]
        reference_images = f"{ref_split}[0:{protocol.reference_size}]"
        rows.append(
            result_row(
                ctx,
                protocol,
                (split, reference_images, subject),
                len(subject_prompts.captions),
                time.time() - started,
                values,
            )
        )
    return rows, grid


def _scored(ctx: Context, features: dict[str, Tensor], prompts: Prompts) -> ScoredImages:
    ids = text = None
    if ctx.eval_encoder is not None:
        ids, text = encode_prompts(ctx.eval_encoder, prompts.captions)
    return ScoredImages(
        features=features,
        prompt_ids=ids,
        prompt_features=text,
        targets=prompts.targets,
        attribute_names=tuple(ATTRIBUTE_NAMES) if prompts.targets is not None else (),
    )


def result_row(
    ctx: Context,
    protocol: ProtocolConfig,
    what: tuple[str, str, str],
    num_images: int,
    seconds: float,
    values: dict,
) -> dict:
    """One table row: what was scored (split, reference images, subject), with which networks, under
    which protocol, then the metrics."""
    (split, reference_images, subject), cfg, info = what, ctx.cfg, ctx.sampler.info
    train_encoder = ctx.sampler.encoder
    row = {
        "subject": SUBJECTS[subject],
        "checkpoint": info.get("path", cfg.checkpoint),
        "kimg": round(info.get("nimg", 0) / 1000, 3),
        "dataset": cfg.data.kind,
        "eval_split": split,
        "eval_size": cfg.data.size if cfg.data.kind == "shapes" else None,
        "reference_images": reference_images,  # split[first:last] of the reference set
        **protocol_columns(protocol),
        "num_images": num_images,
        "train_clip": f"{train_encoder.name}:{encoder_fingerprint(train_encoder)[:12]}",
        "eval_clip": (
            f"{ctx.eval_encoder.name}:{encoder_fingerprint(ctx.eval_encoder)[:12]}"
            if ctx.eval_encoder is not None
            else None
        ),
        "inception": ctx.extractors["inception"].identity if "inception" in ctx.extractors else None,
        "attribute_classifier": (
            ctx.extractors["attributes"].identity.split(":")[1][:12] if "attributes" in ctx.extractors else None
        ),
        "device": str(ctx.device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(seconds, 1),
    }
    row.update(values)
    return row


def load_eval_config(params: str | Path | None, overrides: list[str], protocol: str | None = None) -> EvalConfig:
    """A params file (with `extends`), then the named protocol preset if given, then `key.sub=value`
    overrides (values parsed as YAML)."""
    preset = {} if protocol is None else {"protocol": dataclasses.asdict(protocol_preset(protocol))}
    return load_with_overrides(EvalConfig, params, overrides, replace=preset)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("evaluate", "Evaluate a LAFITE generator; rows go to results/<table>.csv/.md")
    add_params_arguments(parser, "EvalConfig", "checkpoint=results/runs/train")
    parser.add_argument(
        "--protocol",
        help=f"a named protocol preset replacing the params file's ({', '.join(ProtocolConfig.PRESETS)}; "
        "default: the params file's protocol)",
    )
    args = parser.parse_args(argv)
    cfg = load_eval_config(args.params, args.overrides, args.protocol)
    rows = evaluate(cfg)
    for row in rows:
        print(json.dumps({k: row[k] for k in ("subject", "eval_split", *metric_columns(row))}))
    table = Path(cfg.results_dir) / cfg.table
    print(f"table: {table}.md (every column: {table}.csv); this run's numbers: {Path(cfg.output_dir) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    run_main(main, errors=(*INPUT_ERRORS, RuntimeError))
