"""Contrastive pre-training of the kit's tiny CLIP-architecture encoder on Captioned Shapes.

No CLIP weights can be downloaded here, so the kit trains its own small CLIP the way CLIP was
trained (Radford et al. 2021, Fig. 3): an image tower and a text tower map a batch of image /
caption pairs into one space, and a symmetric cross-entropy over the batch's similarity matrix
(scaled by a learnable temperature) pulls each image towards its caption.

Like CLIP, which saw all of language, the encoder sees every (shape, colour) combination, the
held-out zero-shot ones included: they are held out from the *generator*, not from the words.
Only the Shapes `test` split is kept unseen, for measuring the encoder.

One departure from CLIP's loss: captions here are often partial ("a red shape", "red star,
top left"), so a caption can describe several images of a batch. Those images are positives of
that caption, not negatives; the targets of each row are spread over its positives (the
multi-positive form of the same loss). With one caption per image and no shared descriptions it
is exactly CLIP's loss.

The model is the open_clip model inside a `ClipEncoder`, trained through the encoder's own
preprocessing, and saved as a plain safetensors state dict: it loads back through the same
open_clip path as a real CLIP file,
`load_encoder(EncoderConfig(name="lafite-tiny", pretrained="lafite-tiny-shapes.safetensors"))`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from lafite_core import checkpoint as ckpt
from lafite_core.config import EncoderConfig, PretrainConfig, to_dict
from lafite_core.data.shapes import (
    ATTRIBUTE_NAMES,
    CAPTION_TEMPLATES,
    SPACE_DIMS,
    SPACE_SIZE,
    VOCABULARIES,
    ShapesDataset,
    caption_for,
    class_prompts,
    fill_template,
    render,
    split_tuples,
    template_attributes,
    tuple_attributes,
)
from lafite_core.encoders import ClipEncoder, file_sha256, load_encoder
from lafite_core.progress import tqdm
from lafite_core.zero_shot import attribute_accuracy, combination_text_features, matching_cosine, prompt_accuracy

# Templates only seen in pre-training, on top of the dataset's own captions: single attributes
# (so "a red shape" means red, whatever else the image shows) and a few more pairings.
EXTRA_TEMPLATES = (
    "a {shape}",
    "a {colour} shape",
    "a {size} shape",
    "a shape {position_long}",
    "a shape on a {background} background",
    "a {colour} {shape} on a {background} background",
    "a {size} {shape} {position_long}",
    "a picture of a {size} {colour} {shape}",
)
TRAINING_TEMPLATES = tuple(CAPTION_TEMPLATES) + EXTRA_TEMPLATES


# ------------------------------------------------------------------------------------ the loss
def clip_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor, positives: Tensor | None = None
) -> Tensor:
    """CLIP's symmetric contrastive loss over a batch (Radford et al. 2021, Fig. 3).

    logits_ij = exp(t) * cos(image_i, text_j) for B images and M captions. Row i's targets are
    uniform over the captions `positives[i]` marks (default, B = M: only caption i, CLIP's
    identity targets), column j's over the images that caption j describes. The two
    cross-entropies are averaged."""
    if positives is None:
        positives = torch.eye(
            image_features.shape[0], text_features.shape[0], dtype=torch.bool, device=image_features.device
        )
    if not (bool(positives.any(dim=1).all()) and bool(positives.any(dim=0).all())):
        raise ValueError("every image and every caption needs at least one positive in the batch")
    logits = logit_scale.exp() * image_features @ text_features.T
    targets = positives.float()
    image_to_text = -(targets / targets.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1)
    text_to_image = -(targets / targets.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0)
    return (image_to_text.mean() + text_to_image.mean()) / 2


def caption_positives(image_labels: Tensor, caption_labels: Tensor, mentions: Tensor) -> Tensor:
    """[B, M] bool: caption j describes image i when every attribute caption j names matches
    image i's. image_labels [B, k] are attribute indices, caption_labels [M, k] those of the image
    each caption was written for, mentions [M, k] which attributes each caption names."""
    agree = image_labels[:, None, :] == caption_labels[None, :, :]  # [image i, caption j, attribute]
    return (agree | ~mentions[None, :, :]).all(dim=2)


# ------------------------------------------------------------------------------------ the data
class ShapesPairs:
    """Image / caption pairs drawn on the fly from every Shapes image except the `test` split.

    The pool is the `train` and `heldout` splits together (all attribute combinations with all
    their jitters); each draw renders fresh images and writes `captions_per_image` captions of
    each from random templates. More than one caption per image gives the image tower more
    signal per (costly) image forward pass; the text tower is the cheap one.

    With `group_size` g > 1 a batch is B/g groups: a random image followed by g - 1 images that
    differ from it in one attribute each (and in jitter). In a random batch of 128 the easy
    attributes (colour, background, size) already tell almost every image apart, so the loss
    barely asks for shape and position; inside a group only the changed attribute does."""

    def __init__(self, resolution: int, seed: int, templates: tuple[str, ...] = TRAINING_TEMPLATES):
        splits = split_tuples(seed)
        self.pool = np.concatenate([splits["train"], splits["heldout"]]).astype(np.int64)
        self.is_test = np.zeros(SPACE_SIZE, dtype=bool)
        self.is_test[splits["test"].astype(np.int64)] = True
        self.resolution = resolution
        self.templates = templates
        self.mentions = torch.tensor([[name in template_attributes(t) for name in ATTRIBUTE_NAMES] for t in templates])

    def __len__(self) -> int:
        return len(self.pool)

    def numbers(self, batch_size: int, generator: torch.Generator, group_size: int = 1) -> list[int]:
        """Tuple numbers of one batch (see the class docstring for groups)."""
        if group_size < 1 or batch_size % group_size:
            raise ValueError(f"group_size must divide batch_size; got {group_size} and {batch_size}")
        anchors = self.pool[torch.randint(len(self), (batch_size // group_size,), generator=generator).numpy()]
        out = []
        for anchor in anchors.tolist():
            out.append(anchor)
            out.extend(self._sibling(anchor, generator) for _ in range(group_size - 1))
        return out

    def _sibling(self, number: int, generator: torch.Generator) -> int:
        """A non-test tuple with one attribute of `number` changed and a fresh jitter."""
        digits = list(np.unravel_index(number, SPACE_DIMS))
        k = int(torch.randint(len(ATTRIBUTE_NAMES), (1,), generator=generator))
        shift = 1 + int(torch.randint(SPACE_DIMS[k] - 1, (1,), generator=generator))
        digits[k] = (digits[k] + shift) % SPACE_DIMS[k]
        while True:  # about 1 in 10 jitters of a seen combination is a test image
            for d in range(len(ATTRIBUTE_NAMES), len(SPACE_DIMS)):
                digits[d] = int(torch.randint(SPACE_DIMS[d], (1,), generator=generator))
            candidate = int(np.ravel_multi_index(digits, SPACE_DIMS))
            if not self.is_test[candidate]:
                return candidate

    def batch(
        self, batch_size: int, generator: torch.Generator, captions_per_image: int = 1, group_size: int = 1
    ) -> dict:
        """images [B, 3, R, R] in [-1, 1], labels [B, k]; captions (B * c strings, those of image
        0 first), caption_labels and mentions [B * c, k]."""
        numbers = self.numbers(batch_size, generator, group_size)
        chosen = torch.randint(len(self.templates), (batch_size, captions_per_image), generator=generator)
        images, captions, labels = [], [], []
        for number, templates in zip(numbers, chosen.tolist()):
            attributes = tuple_attributes(number)
            images.append(render(attributes, self.resolution))
            captions.extend(fill_template(self.templates[t], attributes) for t in templates)
            labels.append([VOCABULARIES[name].index(attributes[name]) for name in ATTRIBUTE_NAMES])
        labels = torch.tensor(labels)
        return {
            "images": images_to_tensor(np.stack(images)),
            "labels": labels,
            "captions": captions,
            "caption_labels": labels.repeat_interleave(captions_per_image, dim=0),
            "mentions": self.mentions[chosen.flatten()],
        }


def images_to_tensor(images: np.ndarray) -> Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1], the generator's range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ------------------------------------------------------------------------------------ training
@dataclass
class PretrainResult:
    weights: Path
    metrics: dict
    history: list[dict] = field(default_factory=list)


def learning_rate(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero (CLIP's schedule)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_temperature(model: torch.nn.Module, temperature: float, learnable: bool) -> None:
    """A low, fixed temperature keeps the two towers' cones apart (Liang et al. 2022, "Mind the
    Gap"): the loss is met by small margins, so matched pairs need not move close together."""
    if not 0.01 <= temperature <= 1:
        raise ValueError(f"temperature_init must be in [0.01, 1] (CLIP clips at 0.01), got {temperature}")
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / temperature))
    model.logit_scale.requires_grad_(learnable)


def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW; gains, biases and the temperature are not decayed (as in open_clip's training)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def train_step(encoder: ClipEncoder, batch: dict, optimizer: torch.optim.Optimizer) -> float:
    """One contrastive step through the encoder's own preprocessing and tokenizer."""
    model = encoder.model
    image_features = F.normalize(model.encode_image(encoder.preprocess(batch["images"])), dim=-1)
    tokens = encoder.tokenizer(batch["captions"]).to(encoder.device)
    text_features = F.normalize(model.encode_text(tokens), dim=-1)
    positives = caption_positives(batch["labels"], batch["caption_labels"], batch["mentions"]).to(encoder.device)
    loss = clip_loss(image_features, text_features, model.logit_scale, positives)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():  # CLIP clips the temperature at 100
        model.logit_scale.clamp_(0, math.log(100))
    return float(loss.detach())


def pretrain_encoder(
    cfg: PretrainConfig, on_log: Callable[[dict], None] | None = None, progress: bool = True
) -> PretrainResult:
    """Train the encoder named by cfg.architecture from scratch; write weights and metrics to cfg.output_dir.

    Writes `history.jsonl` (one line per step, as it trains: watch it with `tail -f`),
    `<architecture>-shapes.safetensors`, `metrics.json` (final zero-shot accuracies on the unseen
    `test` split) and `provenance.json`. At every progress evaluation the full state goes to
    `checkpoints/` (atomically), so a killed run started again with the same config continues
    from there and ends with the same weights."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    encoder = load_encoder(EncoderConfig(name=cfg.architecture, pretrained=None, device=cfg.device))
    encoder.model.requires_grad_(True)
    encoder.model.train()
    set_temperature(encoder.model, cfg.temperature_init, cfg.learn_temperature)
    optimizer = make_optimizer(encoder.model, cfg)
    pairs = ShapesPairs(cfg.resolution, cfg.dataset_seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    first_step, history, spent = _resume(out, cfg, encoder, optimizer, generator)
    start = time.time() - spent
    with open(out / "history.jsonl", "w") as log:
        for record in history:
            log.write(json.dumps(record) + "\n")
        for step in tqdm(
            range(first_step, cfg.steps),
            desc="pre-training",
            unit="step",
            disable=not progress,
            initial=first_step,
            total=cfg.steps,
        ):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg)
            loss = train_step(
                encoder, pairs.batch(cfg.batch_size, generator, cfg.captions_per_image, cfg.group_size), optimizer
            )
            record = {
                "step": step + 1,
                "loss": loss,
                "lr": optimizer.param_groups[0]["lr"],
                "logit_scale": float(encoder.model.logit_scale.detach().exp()),
                "seconds": time.time() - start,
            }
            evaluate_now = cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps
            if evaluate_now:
                record.update(_flat(evaluate_encoder(encoder, cfg.resolution, cfg.dataset_seed, cfg.eval_images)))
                encoder.model.train()
            history.append(record)
            log.write(json.dumps(record) + "\n")
            log.flush()
            if evaluate_now:
                _save_state(out, cfg, encoder, optimizer, generator, history)
            if on_log is not None:
                on_log(record)
    train_seconds = time.time() - start
    metrics = evaluate_encoder(encoder, cfg.resolution, cfg.dataset_seed, cfg.eval_images)
    metrics.update(
        train_seconds=round(train_seconds, 1),
        final_loss=history[-1]["loss"] if history else None,
        steps=cfg.steps,
        images_seen=cfg.steps * cfg.batch_size,
    )
    weights = out / f"{cfg.architecture}-shapes.safetensors"
    save_weights(encoder.model, weights, {"config": json.dumps(to_dict(cfg))})
    metrics["weights_sha256"] = file_sha256(weights)
    (out / "metrics.json").write_text(json.dumps(_flat(metrics), indent=2))
    (out / "provenance.json").write_text(
        json.dumps({"config": to_dict(cfg), "metrics": metrics, "torch": torch.__version__}, indent=2)
    )
    return PretrainResult(weights=weights, metrics=metrics, history=history)


def _save_state(
    out: Path,
    cfg: PretrainConfig,
    encoder: ClipEncoder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: list[dict],
) -> None:
    state = {
        "config": ckpt.to_json_string(to_dict(cfg)),
        "history": ckpt.to_json_string(history),
        "model": ckpt.module_state(encoder.model),
        "optimizer": optimizer.state_dict(),
        "batch_rng": generator.get_state(),
        "rng": ckpt.capture_rng(cfg.device),
    }
    ckpt.save_checkpoint(state, out / "checkpoints", nimg=len(history) * cfg.batch_size, keep_last=1)


def _resume(
    out: Path, cfg: PretrainConfig, encoder: ClipEncoder, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, list[dict], float]:
    """(first step, history so far, seconds spent) from the newest checkpoint in out, if any."""
    ckpt.remove_stale_temporaries(out / "checkpoints")
    path = ckpt.latest_checkpoint(out / "checkpoints")
    if path is None:
        return 0, [], 0.0
    state = ckpt.load_checkpoint(path)
    if ckpt.from_json_string(state["config"]) != to_dict(cfg):
        raise ValueError(
            f"{path} was written by a run with other parameters; use another output_dir or delete {out / 'checkpoints'}"
        )
    encoder.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["batch_rng"])
    ckpt.restore_rng(state["rng"], cfg.device)
    history = ckpt.from_json_string(state["history"])
    return len(history), history, history[-1]["seconds"]


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """A plain open_clip state dict in safetensors (no pickle, loadable by open_clip.create_model)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=metadata)


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate_encoder(
    encoder: ClipEncoder, resolution: int, dataset_seed: int, images: int, batch_size: int = 256
) -> dict:
    """Zero-shot accuracy per attribute on the first `images` of the unseen Shapes `test` split.

    Three prompt forms (see zero_shot.py): the long caption varying one attribute with the others
    given, the best of all long captions, and one short prompt per class ("a red shape"). Also
    the mean cosine between an image and each of its captions (the modality gap LAFITE bridges)."""
    encoder.eval()
    data = ShapesDataset(resolution, size=images, seed=dataset_seed, split="test")
    items = [data[i] for i in range(len(data))]
    features = torch.cat(
        [
            encoder.encode_image(images_to_tensor(np.stack([it.image for it in items[i : i + batch_size]])))
            for i in range(0, len(items), batch_size)
        ]
    ).cpu()
    attributes = [it.attributes for it in items]
    long_caption = lambda attrs: caption_for(attrs, 0)  # noqa: E731 - names every attribute
    combos = combination_text_features(encoder.encode_text, VOCABULARIES, long_caption)
    result = {
        mode: attribute_accuracy(encoder, features, attributes, VOCABULARIES, long_caption, mode, combos)
        for mode in ("given_others", "best_caption")
    }
    result["class_prompt"] = {
        name: prompt_accuracy(encoder, features, [a[name] for a in attributes], class_prompts(name))
        for name in ATTRIBUTE_NAMES
    }
    cosines = [
        matching_cosine(features, encoder.encode_text([caption_for(a, t) for a in attributes]).cpu())
        for t in range(len(CAPTION_TEMPLATES))
    ]
    result["matching_cosine"] = float(np.mean(cosines))
    result["eval_images"] = len(items)
    return result


def accuracy_table(metrics: dict):
    """Per-attribute accuracies as a DataFrame: one row per attribute, one column per prompt form."""
    flat = _flat(metrics)
    forms = ("given_others", "best_caption", "class_prompt")
    return pd.DataFrame({form: {a: flat[f"{form}/{a}"] for a in ATTRIBUTE_NAMES} for form in forms})


def plot_history(history: list[dict]):
    """Loss per step (and, where evaluated, zero-shot accuracy per attribute) as a figure."""
    evaluated = [r for r in history if "given_others/shape" in r]
    fig, axes = plt.subplots(1, 2 if evaluated else 1, figsize=(11 if evaluated else 6, 3.5), squeeze=False)
    axes[0, 0].plot([r["step"] for r in history], [r["loss"] for r in history], lw=0.8)
    axes[0, 0].set(xlabel="step", ylabel="contrastive loss", title="pre-training loss")
    if evaluated:
        for name in ATTRIBUTE_NAMES:
            axes[0, 1].plot([r["step"] for r in evaluated], [r[f"given_others/{name}"] for r in evaluated], label=name)
        axes[0, 1].set(xlabel="step", ylabel="accuracy", title="zero-shot accuracy (test split)", ylim=(0, 1.02))
        axes[0, 1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _flat(metrics: dict, prefix: str = "") -> dict:
    """{"given_others": {"shape": 0.9}} -> {"given_others/shape": 0.9} (one column per number)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
