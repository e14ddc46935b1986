"""Does a generator trained on Captioned Shapes draw what the prompt says?

    python benchmarks/shapes_prompt_following.py results/runs/train/checkpoints/checkpoint-0000020000.pt

For every attribute combination (shape, colour, size, position, background) the generator gets the
encoder's text feature of its long caption ("a small red triangle in the top left corner on a black
background") and one fixed latent; the same encoder then classifies each generated image zero-shot
(lafite_core/zero_shot.py) and we count how often each attribute comes out as prompted:

- given_others: for one attribute, the captions that agree with the prompt on all other attributes
  compete (chance = 1 / number of values);
- best_caption: the best of all captions, nothing given (chance is the same per attribute).

Two references frame the numbers: chance, and the same classification of the real rendered images
of those combinations (how well the encoder itself reads the attributes: the ceiling). A generator
could score by fooling the encoder it was trained against, so the images are also read by the kit's
independent judge, a supervised CNN trained on rendered images (lafite_core/assets/
attribute-classifier.md), when its weights are present (`classifier` rows; `all` = every attribute). `seen`
combinations were in the training set; `heldout` ones (six shape-colour pairs) never were, so their
accuracy shows composition of known words. Until the evaluation issue lands, this is the kit's
check that training follows prompts (issue 4, item 7).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lafite_core import attribute_classifier as judge  # noqa: E402
from lafite_core.assets import ASSETS_DIR, resolve_asset  # noqa: E402
from lafite_core.config import EncoderConfig, from_dict  # noqa: E402
from lafite_core.data.shapes import VOCABULARIES, attribute_combinations, caption_for, render  # noqa: E402
from lafite_core.encoders import load_encoder  # noqa: E402
from lafite_core.grids import save_image_grid, seed_latents as fixed_latents  # noqa: E402
from lafite_core.sampler import load_generator  # noqa: E402
from lafite_core.zero_shot import attribute_accuracy, combination_text_features  # noqa: E402


@torch.no_grad()
def generate(G, text_features: torch.Tensor, z: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat(
        [G(z[i : i + batch], text_features[i : i + batch], noise_mode="const") for i in range(0, len(z), batch)]
    )


@torch.no_grad()
def evaluate(checkpoint: str | Path, seed: int = 0, grid: str | Path | None = None) -> dict:
    G, info = load_generator(checkpoint)
    enc_cfg = from_dict(EncoderConfig, info["config"]["encoder"])
    encoder = load_encoder(dataclasses.replace(enc_cfg, device="cpu", pretrained=resolve_asset(enc_cfg.pretrained)))
    if encoder.identity() != info["encoder_identity"]:
        raise ValueError(
            f"{checkpoint} was trained with encoder {info['encoder_identity']}, found {encoder.identity()}"
        )
    caption = lambda attrs: caption_for(attrs, 0)  # noqa: E731
    combos = combination_text_features(encoder.encode_text, VOCABULARIES, caption)
    resolution = G.resolution
    judge_path = ASSETS_DIR / "attribute-classifier.safetensors"
    classifier = judge.load_attribute_classifier(judge_path) if judge_path.is_file() else None
    results = {
        "checkpoint": str(checkpoint),
        "kimg": info["nimg"] / 1000,
        "step": info["step"],
        "chance": {name: 1 / len(values) for name, values in VOCABULARIES.items()},
    }
    for which in ("seen", "heldout"):
        attributes = attribute_combinations(which)
        prompts = [caption(a) for a in attributes]
        text = encoder.encode_text(prompts)
        z = fixed_latents(list(range(seed, seed + len(prompts))), G.z_dim)
        fakes = generate(G, text, z)
        reals = (
            torch.stack([torch.from_numpy(render(a, resolution)).permute(2, 0, 1) for a in attributes]).float() / 127.5
            - 1
        )
        for name, images in (("generated", fakes), ("real", reals)):
            features = encoder.encode_image(images)
            for mode in ("given_others", "best_caption"):
                acc = attribute_accuracy(encoder, features, attributes, VOCABULARIES, caption, mode, combos)
                results[f"{which}/{name}/{mode}"] = {k: round(v, 4) for k, v in acc.items()}
            if classifier is not None:
                labels = torch.tensor([[VOCABULARIES[k].index(a[k]) for k in VOCABULARIES] for a in attributes])
                acc = judge.attribute_accuracy(classifier, images, labels)
                results[f"{which}/{name}/classifier"] = {k: round(v, 4) for k, v in acc.items()}
        results[f"{which}/count"] = len(attributes)
        if grid is not None and which == "seen":
            picks = torch.linspace(0, len(attributes) - 1, 48).long()
            save_image_grid(fakes[picks], 8, grid)
            results["grid_prompts"] = [prompts[i] for i in picks.tolist()]
    return results


def markdown(results: dict) -> str:
    names = list(VOCABULARIES)
    lines = [f"| images | judge | {' | '.join(names)} | all |", "|---|---|" + "---|" * (len(names) + 1)]
    chance_all = math.prod(results["chance"].values())
    lines.append("| chance | | " + " | ".join(f"{results['chance'][n]:.2f}" for n in names) + f" | {chance_all:.4f} |")
    for which in ("seen", "heldout"):
        for name in ("generated", "real"):
            for mode in ("given_others", "best_caption", "classifier"):
                acc = results.get(f"{which}/{name}/{mode}")
                if acc is not None:
                    cells = " | ".join(f"{acc[n]:.2f}" for n in names)
                    lines.append(
                        f"| {which} {name} | {mode} | {cells} | {acc['all']:.2f} |"
                        if "all" in acc
                        else f"| {which} {name} | {mode} | {cells} | |"
                    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results as JSON here (default: next to the run's stats)")
    args = parser.parse_args()
    run_dir = Path(args.checkpoint).resolve().parent.parent
    out = Path(args.out) if args.out else run_dir / "prompt_following.json"
    results = evaluate(args.checkpoint, args.seed, grid=out.with_name("prompt_following_samples.png"))
    out.write_text(json.dumps(results, indent=2))
    print(f"{results['checkpoint']} ({results['kimg']:.1f} kimg)\n")
    print(markdown(results))
    print(f"\nwritten: {out} and {out.with_name('prompt_following_samples.png')}")


if __name__ == "__main__":
    main()
