"""Does a generator draw what the prompt says, whatever the prompt leaves out? The kit's judged
quality figures on Captioned Shapes.

Prompt forms: each of the caption templates (`t0` "a small red triangle in the top left corner on a
black background" ... `t5` "red triangle"), every distinct caption over the `seen` attribute
combinations and over the `heldout` ones (shape/colour pairs never in training), and `a_shape`
("a triangle", seen only). Every prompt gets the same 8 latents (seeds 0-7). The judge is the
shipped supervised attribute classifier (assets/attribute-classifier.md), trained on renders only:
never the encoder the generator was trained against, so a generator cannot score by fooling its own
training signal. Three figures per form and split:

- named: the fraction of images in which every attribute the prompt names is judged right (and
  `named_<attribute>` for each one);
- spread: for each attribute the prompt leaves out, the entropy of its judged values over the 8
  images of one prompt divided by log(min(vocabulary size, 8)), averaged over prompts. A generator
  that ignores its latent scores 0. `real_reference` gives the same figure for real renders of the
  same prompts, their left-out attributes and jitter drawn as the training data draws them;
- confidence: the judge's mean max-softmax over all five attributes; a faint blend reads low.

`seen` and `heldout` also keep the full captions' per-attribute accuracy (form t0), the figure the
earlier bars were set on.

    python -m lafite_core.prompt_following lafite_core/assets/demo-generator.safetensors results/runs/train
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lafite_core.assets import ASSETS_DIR
from lafite_core.attribute_classifier import AttributeClassifier, load_attribute_classifier
from lafite_core.data.shapes import (
    ATTRIBUTE_NAMES,
    CAPTION_TEMPLATES,
    HELDOUT_COMBINATIONS,
    OFFSET_STEP,
    OFFSET_STEPS,
    SCALES,
    VOCABULARIES,
    attribute_combinations,
    fill_template,
    render_batch,
    template_attributes,
)
from lafite_core.grids import latents
from lafite_core.params import run_main
from lafite_core.reporting import attribute_chance
from lafite_core.sampler import Sampler
from lafite_core.zero_shot import label_indices

JUDGE_WEIGHTS = ASSETS_DIR / "attribute-classifier.safetensors"
SPLITS = ("seen", "heldout")
ATTRIBUTES = (*VOCABULARIES, "all")
SHAPE_ONLY = "a {shape}"
FORMS = {**{f"t{i}": t for i, t in enumerate(CAPTION_TEMPLATES)}, "a_shape": SHAPE_ONLY}
SHORT_FORMS = ("t5", "a_shape")  # the prompts people type, whose spread has a bar
LATENTS_PER_PROMPT = 8  # seeds 0..7, the same for every prompt
BATCH = 256  # images per generator call (constant noise: the batch size does not change them)
JUDGE_VERSION = 2  # bump when a figure's definition changes, so memoised judgements are redone


@dataclass(frozen=True)
class PromptSet:
    """Every distinct prompt of one form over one split, with the attribute values each names."""

    form: str
    split: str
    named: tuple[str, ...]  # in ATTRIBUTE_NAMES order
    prompts: tuple[str, ...]
    values: tuple[dict, ...]  # per prompt: attribute -> value, for the named attributes

    @property
    def left_out(self) -> tuple[str, ...]:
        return tuple(a for a in ATTRIBUTE_NAMES if a not in self.named)


def form_splits(form: str) -> tuple[str, ...]:
    """`a_shape` names no colour, so it has no held-out pair: it is judged on `seen` only."""
    return ("seen",) if form == "a_shape" else SPLITS


@functools.cache
def prompt_set(form: str, split: str) -> PromptSet:
    template = FORMS[form]
    named = tuple(a for a in ATTRIBUTE_NAMES if a in template_attributes(template))
    prompts: dict[str, dict] = {}
    for attributes in attribute_combinations(split):
        prompts.setdefault(fill_template(template, attributes), {a: attributes[a] for a in named})
    return PromptSet(form, split, named, tuple(prompts), tuple(prompts.values()))


def prompt_sets() -> list[PromptSet]:
    return [prompt_set(form, split) for form in FORMS for split in form_splits(form)]


# ------------------------------------------------------------------------------------- figures
def judged(classifier: AttributeClassifier, images: Tensor) -> tuple[Tensor, Tensor]:
    """Predicted value index [N, 5] and max-softmax [N, 5] of each attribute (ATTRIBUTE_NAMES order)."""
    indices, confidences = [], []
    with torch.no_grad():
        for i in range(0, len(images), 1024):
            logits = classifier(images[i : i + 1024])
            probs = [logits[a].softmax(dim=1) for a in ATTRIBUTE_NAMES]
            indices.append(torch.stack([p.argmax(dim=1) for p in probs], dim=1))
            confidences.append(torch.stack([p.max(dim=1).values for p in probs], dim=1))
    return torch.cat(indices), torch.cat(confidences)


def normalised_entropy(values: Tensor, vocabulary_size: int) -> float:
    """Entropy of the empirical distribution of `values`, divided by log(min(vocabulary size, n))."""
    counts = torch.bincount(values, minlength=vocabulary_size).double()
    p = counts[counts > 0] / len(values)
    return float(-(p * p.log()).sum()) / math.log(min(vocabulary_size, len(values)))


def figures(prompts: PromptSet, predicted: Tensor, confidence: Tensor) -> dict[str, float]:
    """named, named_<a>, spread, spread_<a> and confidence of one prompt set, from the judge's
    reading of its images ([P * k, 5], prompt-major, k images per prompt)."""
    k = len(predicted) // len(prompts.prompts)
    per_prompt = predicted.view(len(prompts.prompts), k, len(ATTRIBUTE_NAMES))
    out: dict[str, float] = {"prompts": len(prompts.prompts)}
    right = torch.ones(per_prompt.shape[:2], dtype=torch.bool)
    for a in prompts.named:
        j = ATTRIBUTE_NAMES.index(a)
        wanted = torch.tensor([VOCABULARIES[a].index(v[a]) for v in prompts.values])
        correct = per_prompt[..., j] == wanted[:, None]
        out[f"named_{a}"] = float(correct.float().mean())
        right &= correct
    out["named"] = float(right.float().mean())
    spreads = []
    for a in prompts.left_out:
        j = ATTRIBUTE_NAMES.index(a)
        size = len(VOCABULARIES[a])
        out[f"spread_{a}"] = float(np.mean([normalised_entropy(row, size) for row in per_prompt[..., j]]))
        spreads.append(out[f"spread_{a}"])
    if spreads:
        out["spread"] = float(np.mean(spreads))
    out["confidence"] = float(confidence.mean())
    return out


def full_caption_accuracy(prompts: PromptSet, predicted: Tensor) -> dict[str, float]:
    """Per-attribute accuracy and `all` of a form that names every attribute (t0)."""
    k = len(predicted) // len(prompts.prompts)
    correct = predicted == label_indices(prompts.values, VOCABULARIES).repeat_interleave(k, dim=0)
    out = {a: float(correct[:, j].float().mean()) for j, a in enumerate(ATTRIBUTE_NAMES)}
    return {**out, "all": float(correct.all(dim=1).float().mean()), "count": len(prompts.prompts)}


# ---------------------------------------------------------------------------------- generators
@torch.no_grad()
def generate(sampler: Sampler, prompts: PromptSet, seed: int = 0) -> Tensor:
    """LATENTS_PER_PROMPT images per prompt, prompt-major; image j of every prompt uses seed + j."""
    texts = prompts.prompts
    conditions = torch.cat([sampler.text_features(list(texts[i : i + 512])) for i in range(0, len(texts), 512)])
    z = latents(seed, LATENTS_PER_PROMPT, sampler.G.z_dim).to(sampler.device).repeat(len(conditions), 1)
    c = conditions.repeat_interleave(LATENTS_PER_PROMPT, dim=0)
    return torch.cat(
        [sampler.G(z[i : i + BATCH], c[i : i + BATCH], noise_mode="const").cpu() for i in range(0, len(z), BATCH)]
    )


def judge_sampler(sampler: Sampler, classifier: AttributeClassifier, seed: int = 0) -> dict:
    """`seen`/`heldout`: the full captions' per-attribute accuracy; `forms`: split -> form -> figures."""
    results: dict = {"forms": {split: {} for split in SPLITS}}
    for prompts in prompt_sets():
        predicted, confidence = judged(classifier, generate(sampler, prompts, seed))
        results["forms"][prompts.split][prompts.form] = figures(prompts, predicted, confidence)
        if prompts.form == "t0":
            results[prompts.split] = full_caption_accuracy(prompts, predicted)
    return results


def judge(source: str | Path, seed: int = 0, classifier: AttributeClassifier | None = None) -> dict:
    """Judge a generator from any source Sampler.load opens; adds its kimg."""
    sampler = Sampler.load(source)
    classifier = classifier or load_attribute_classifier(JUDGE_WEIGHTS)
    return {
        "source": str(source),
        "kimg": sampler.info["nimg"] / 1000,
        "judge_version": JUDGE_VERSION,
        **judge_sampler(sampler, classifier, seed),
    }


# ------------------------------------------------------------------------------ the real renders
def _prompt_rng(prompt: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little"))


def real_draws(prompt: str, values: dict, k: int = LATENTS_PER_PROMPT) -> list[dict]:
    """k attribute dicts for one prompt: its named values, the rest and the jitter drawn uniformly as
    the training data draws them (never a held-out shape/colour pair unless the prompt names it).
    The draws are a fixed function of the prompt's text."""
    rng = _prompt_rng(prompt)
    draws = []
    while len(draws) < k:
        attributes = {a: values.get(a) or VOCABULARIES[a][rng.integers(len(VOCABULARIES[a]))] for a in ATTRIBUTE_NAMES}
        pair = (attributes["shape"], attributes["colour"])
        if pair in HELDOUT_COMBINATIONS and not {"shape", "colour"} <= set(values):
            continue
        attributes["offset"] = tuple(OFFSET_STEP * OFFSET_STEPS[i] for i in rng.integers(len(OFFSET_STEPS), size=2))
        attributes["scale"] = SCALES[rng.integers(len(SCALES))]
        draws.append(attributes)
    return draws


@functools.cache
def real_reference(classifier_path: str = str(JUDGE_WEIGHTS)) -> dict:
    """The judge's figures for real renders of every prompt set: split -> form -> figures."""
    classifier = load_attribute_classifier(classifier_path)
    out: dict = {split: {} for split in SPLITS}
    for prompts in prompt_sets():
        draws = [d for prompt, values in zip(prompts.prompts, prompts.values) for d in real_draws(prompt, values)]
        images = torch.from_numpy(render_batch(draws, 32)).permute(0, 3, 1, 2).float() / 127.5 - 1
        out[prompts.split][prompts.form] = figures(prompts, *judged(classifier, images))
    return out


def spread_ratio(result: dict, split: str, form: str, reference: dict | None = None) -> float | None:
    """The smallest, over the attributes `form` leaves out, of spread / the real renders' spread."""
    reference = reference or real_reference()
    ours, real = result["forms"][split].get(form), reference[split].get(form)
    if ours is None or real is None:
        return None
    ratios = [ours[k] / real[k] for k in ours if k.startswith("spread_") and real[k] > 0]
    return min(ratios) if ratios else None


# ------------------------------------------------------------------------------------ tables
def markdown_table(rows: dict[str, dict]) -> str:
    """Full captions (t0): rows label -> judge result; one line per (label, split) plus chance."""
    header = "| generator | prompts | " + " | ".join(f"{a} ↑" for a in ATTRIBUTES) + " |"
    lines = [header, "|---|---|" + "---:|" * len(ATTRIBUTES)]
    chance = attribute_chance()
    lines.append("| chance | | " + " | ".join(f"{chance[a]:.2f}" for a in ATTRIBUTES) + " |")
    for label, result in rows.items():
        for which in SPLITS:
            cells = " | ".join(f"{result[which][a]:.2f}" for a in ATTRIBUTES)
            lines.append(f"| {label} | {which} ({result[which]['count']}) | {cells} |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def forms_table(rows: dict[str, dict]) -> str:
    """Every prompt form: named, spread (and its ratio to the real renders') and confidence, per
    generator and split, with the real renders as the reference row. Higher is better throughout."""
    reference = real_reference()
    header = (
        "| generator | split | form | example | prompts | named ↑ | spread ↑ | spread / real (min) ↑ | confidence ↑ |"
    )
    lines = [header, "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for label, result in {"real renders": {"forms": reference}, **rows}.items():
        for split in SPLITS:
            for form, fig in result["forms"][split].items():
                ratio = spread_ratio(result, split, form, reference) if label != "real renders" else None
                example = prompt_set(form, split).prompts[0]
                lines.append(
                    f"| {label} | {split} | {form} | {example} | {fig['prompts']} | {_cell(fig['named'])} | "
                    f"{_cell(fig.get('spread'))} | {_cell(ratio)} | {_cell(fig['confidence'])} |"
                )
    return "\n".join(lines)


def summary_metrics(result: dict) -> dict[str, float | None]:
    """The flat figures a sweep table shows for one judged generator, per split."""
    reference = real_reference()
    metrics: dict[str, float | None] = {}
    for split in SPLITS:
        metrics.update({f"{split}/acc_{a}": result[split][a] for a in ATTRIBUTES})
        for form, fig in result["forms"][split].items():
            if form != "t0":
                metrics[f"{split}/named_{form}"] = fig["named"]
        for form in SHORT_FORMS:
            if form in result["forms"][split]:
                metrics[f"{split}/spread_ratio_{form}"] = spread_ratio(result, split, form, reference)
        metrics[f"{split}/confidence"] = float(np.mean([f["confidence"] for f in result["forms"][split].values()]))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lafite_core.prompt_following", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("sources", nargs="+", help="exported generators, checkpoints or run folders")
    parser.add_argument("--seed", type=int, default=0, help="image j of every prompt uses the latent of seed + j")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    classifier = load_attribute_classifier(JUDGE_WEIGHTS)
    results = {source: judge(source, args.seed, classifier) for source in args.sources}
    rows = {f"{Path(s).name} ({r['kimg']:.0f} kimg)": r for s, r in results.items()}
    print("Full captions (t0), per attribute:\n")
    print(markdown_table(rows))
    print("\nEvery prompt form:\n")
    print(forms_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
