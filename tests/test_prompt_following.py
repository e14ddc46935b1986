"""The judged quality figure: an oracle generator that draws exactly the prompted combination scores
near 1 on every attribute, and one that ignores the prompt scores what its constant guess is worth."""

import math

import pytest
import torch
from torch import nn

from lafite_core.attribute_classifier import load_attribute_classifier
from lafite_core.data.shapes import VOCABULARIES, attribute_combinations, caption_for, render
from lafite_core.prompt_following import JUDGE_WEIGHTS, judge_sampler, markdown_table
from lafite_core.reporting import attribute_chance

PROMPTS = [caption_for(a, 0) for a in attribute_combinations("all")]
ATTRIBUTES = attribute_combinations("all")


class OneHotPrompts:
    """Stands in for a Sampler: a prompt's feature is its one-hot index among every combination."""

    device = torch.device("cpu")

    def __init__(self, G):
        self.G = G

    def text_features(self, prompts):
        return torch.nn.functional.one_hot(torch.tensor([PROMPTS.index(p) for p in prompts]), len(PROMPTS)).float()


class Draws(nn.Module):
    """A 'generator' that renders the combination its condition names (or always `fixed`)."""

    z_dim = 4

    def __init__(self, fixed: dict | None = None):
        super().__init__()
        self.fixed = fixed

    def forward(self, z, c, noise_mode="const"):
        picks = [self.fixed or ATTRIBUTES[i] for i in c.argmax(1).tolist()]
        return torch.stack([torch.from_numpy(render(a, 32)).permute(2, 0, 1) for a in picks]).float() / 127.5 - 1


@pytest.fixture(scope="module")
def judge_model():
    return load_attribute_classifier(JUDGE_WEIGHTS)


def test_an_oracle_generator_scores_near_one(judge_model):
    result = judge_sampler(OneHotPrompts(Draws()), judge_model)
    assert result["seen"]["count"] == len(attribute_combinations("seen"))
    assert result["heldout"]["count"] == len(attribute_combinations("heldout"))
    for which in ("seen", "heldout"):
        for name in (*VOCABULARIES, "all"):
            assert result[which][name] >= 0.97, (which, name, result[which][name])


def test_a_generator_that_ignores_the_prompt_scores_its_constant_guess(judge_model):
    fixed = {"shape": "star", "colour": "red", "size": "large", "position": "center", "background": "black"}
    result = judge_sampler(OneHotPrompts(Draws(fixed)), judge_model)
    seen = attribute_combinations("seen")
    for name in VOCABULARIES:
        share = sum(a[name] == fixed[name] for a in seen) / len(seen)
        assert result["seen"][name] == pytest.approx(share, abs=0.02), name
    assert result["seen"]["all"] < 0.01


def test_chance_levels_and_table():
    chance = attribute_chance()
    assert chance["shape"] == pytest.approx(1 / 6) and chance["size"] == pytest.approx(0.5)
    assert chance["all"] == pytest.approx(math.prod(1 / len(v) for v in VOCABULARIES.values()))
    row = {w: {**{a: 0.5 for a in (*VOCABULARIES, "all")}, "count": 3} for w in ("seen", "heldout")}
    table = markdown_table({"model": row})
    assert "| model | heldout (3) | 0.50 |" in table and "| chance | | 0.17 | 0.12 |" in table
