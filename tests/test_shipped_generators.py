"""The shipped generators draw what the kit's own example prompts say: the sampler's placeholder, the
training progress prompts and the README's sampling example, 8 seeds each, read by the judge."""

import re
from pathlib import Path

import pytest
import torch

from lafite_core.assets import ASSETS_DIR
from lafite_core.attribute_classifier import load_attribute_classifier
from lafite_core.config import TrainConfig
from lafite_core.data.shapes import ATTRIBUTE_NAMES, BACKGROUNDS, POSITION_PHRASES, VOCABULARIES
from lafite_core.prompt_following import JUDGE_WEIGHTS
from lafite_core.sampler import Sampler

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ASSETS_DIR / "demo-generator.safetensors", ASSETS_DIR / "demo-generator-cliplike.safetensors"]


def readme_prompts() -> list[str]:
    """The prompts of the README's sampling example (`-p prompts '[...]'`)."""
    found = re.findall(r"-p prompts '\[(.*?)\]'", (ROOT / "README.md").read_text())
    return [p.strip().strip('"') for group in found for p in group.split(",")]


EXAMPLES = list(dict.fromkeys(["a red circle", *TrainConfig().progress_prompts, *readme_prompts()]))


def named_attributes(prompt: str) -> dict[str, str]:
    """The Shapes attributes a prompt names, read off its words."""
    named = {}
    for attribute in ("shape", "colour", "size"):
        words = [w for w in VOCABULARIES[attribute] if re.search(rf"\b{w}\b(?! background)", prompt)]
        if words:
            named[attribute] = words[0]
    for position, phrases in POSITION_PHRASES.items():
        if phrases[0] in prompt:
            named["position"] = position
    for background in BACKGROUNDS:
        if f"{background} background" in prompt:
            named["background"] = background
    return named


def test_named_attributes_reads_the_prompt():
    assert named_attributes("a large white cross on a gray background") == {
        "shape": "cross",
        "colour": "white",
        "size": "large",
        "background": "gray",
    }
    assert named_attributes("a small cyan diamond in the top left corner")["position"] == "top left"
    assert len(EXAMPLES) >= 6 and "a red star" in EXAMPLES  # the README's example is among them


NOT_YET = pytest.mark.xfail(
    strict=True,  # a generator that meets the bar turns this into a failure: then drop the mark
    reason="bar not met yet (docs/results.md, 'Prompt forms and spread'): 8 seeds right out of 8 per example, "
    "demo-generator 'a yellow star' 1, 'a red star' 0, 'a large white cross on a gray background' 2, "
    "'a small cyan diamond in the top left corner' 2; demo-generator-cliplike 'a red star' 3, the white cross 5, "
    "the cyan diamond 5",
)


@pytest.mark.parametrize("generator", [pytest.param(p, marks=NOT_YET) for p in SHIPPED], ids=lambda p: p.stem)
def test_every_example_prompt_is_drawn_as_it_says(generator):
    sampler = Sampler.load(generator)
    judge = load_attribute_classifier(JUDGE_WEIGHTS)
    images = sampler.generate(EXAMPLES, n=8, seed=0)
    predicted = judge.predict(images).view(len(EXAMPLES), 8, len(ATTRIBUTE_NAMES))
    for prompt, rows in zip(EXAMPLES, predicted):
        right = torch.ones(8, dtype=torch.bool)
        for attribute, value in named_attributes(prompt).items():
            right &= rows[:, ATTRIBUTE_NAMES.index(attribute)] == VOCABULARIES[attribute].index(value)
        assert right.float().mean() >= 0.75, (generator.name, prompt, right.tolist())
