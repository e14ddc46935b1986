"""Does a generator draw what the prompt says? The kit's judged quality figure on Captioned Shapes.

Every attribute combination (shape, colour, size, position, background) is prompted with its long
caption ("a small red triangle in the top left corner on a black background") and one latent of
its own. The judge is the shipped supervised attribute classifier (assets/attribute-classifier.md),
trained on rendered images only: it is never the encoder the generator was trained against, so a
generator cannot score by fooling its own training signal. `seen` combinations occur in training;
`heldout` shape/colour pairs never do, so their figures show composition of known words.

    python -m lafite_core.prompt_following lafite_core/assets/demo-generator.safetensors results/runs/train
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor

from lafite_core.assets import ASSETS_DIR
from lafite_core.attribute_classifier import AttributeClassifier, attribute_accuracy, load_attribute_classifier
from lafite_core.data.shapes import VOCABULARIES, attribute_combinations, caption_for
from lafite_core.params import run_main
from lafite_core.reporting import attribute_chance
from lafite_core.sampler import Sampler, latents
from lafite_core.zero_shot import label_indices

JUDGE_WEIGHTS = ASSETS_DIR / "attribute-classifier.safetensors"
SPLITS = ("seen", "heldout")
ATTRIBUTES = (*VOCABULARIES, "all")
BATCH = 64


@torch.no_grad()
def generate_combinations(sampler: Sampler, which: str, seed: int = 0) -> tuple[Tensor, list[dict]]:
    """One image per combination of split `which`: combination i uses the latent of seed + i."""
    attributes = attribute_combinations(which)
    conditions = sampler.text_features([caption_for(a, 0) for a in attributes])
    z = latents(seed, len(attributes), sampler.G.z_dim).to(sampler.device)
    images = torch.cat(
        [
            sampler.G(z[i : i + BATCH], conditions[i : i + BATCH], noise_mode="const").cpu()
            for i in range(0, len(z), BATCH)
        ]
    )
    return images, attributes


def judge_sampler(sampler: Sampler, classifier: AttributeClassifier, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per split: the judge's accuracy per attribute, `all` (every attribute right) and `count`."""
    results = {}
    for which in SPLITS:
        images, attributes = generate_combinations(sampler, which, seed)
        accuracy = attribute_accuracy(classifier, images, label_indices(attributes, VOCABULARIES))
        results[which] = {**accuracy, "count": len(attributes)}
    return results


def judge(source: str | Path, seed: int = 0, classifier: AttributeClassifier | None = None) -> dict:
    """Judge a generator from any source Sampler.load opens; adds its kimg."""
    sampler = Sampler.load(source)
    classifier = classifier or load_attribute_classifier(JUDGE_WEIGHTS)
    return {"source": str(source), "kimg": sampler.info["nimg"] / 1000, **judge_sampler(sampler, classifier, seed)}


def markdown_table(rows: dict[str, dict]) -> str:
    """Rows label -> judge result; one line per (label, split) plus chance. Higher is better."""
    header = "| generator | prompts | " + " | ".join(f"{a} ↑" for a in ATTRIBUTES) + " |"
    lines = [header, "|---|---|" + "---:|" * len(ATTRIBUTES)]
    chance = attribute_chance()
    lines.append("| chance | | " + " | ".join(f"{chance[a]:.2f}" for a in ATTRIBUTES) + " |")
    for label, result in rows.items():
        for which in SPLITS:
            cells = " | ".join(f"{result[which][a]:.2f}" for a in ATTRIBUTES)
            lines.append(f"| {label} | {which} ({result[which]['count']}) | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lafite_core.prompt_following", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("sources", nargs="+", help="exported generators, checkpoints or run folders")
    parser.add_argument("--seed", type=int, default=0, help="combination i uses the latent of seed + i")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    classifier = load_attribute_classifier(JUDGE_WEIGHTS)
    results = {source: judge(source, args.seed, classifier) for source in args.sources}
    print(markdown_table({f"{Path(s).name} ({r['kimg']:.0f} kimg)": r for s, r in results.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
