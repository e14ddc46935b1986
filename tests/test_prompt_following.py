"""The judged quality figures: an oracle generator that draws what each prompt names, and the rest as
the data does, scores like real renders on every prompt form; one that ignores its latent has no
spread; one that ignores the prompt scores its constant guess."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lafite_core import prompt_following as pf
from lafite_core.attribute_classifier import load_attribute_classifier
from lafite_core.data.shapes import ATTRIBUTE_NAMES, VOCABULARIES, attribute_combinations, render_batch
from lafite_core.reporting import attribute_chance

SETS = pf.prompt_sets()
PROMPTS = [p for s in SETS for p in s.prompts]
VALUES = [v for s in SETS for v in s.values]


class OneHotPrompts:
    """Stands in for a Sampler: a prompt's feature is its one-hot index among every judged prompt."""

    device = torch.device("cpu")

    def __init__(self, G):
        self.G = G
        self.index = {p: i for i, p in enumerate(PROMPTS)}

    def text_features(self, prompts):
        return nn.functional.one_hot(torch.tensor([self.index[p] for p in prompts]), len(PROMPTS)).float()


class Draws(nn.Module):
    """A 'generator' that renders what its condition's prompt names. The attributes the prompt leaves
    out are drawn from the latent (use_latent) or always the first allowed value; `fixed` ignores the
    prompt altogether."""

    z_dim = 4

    def __init__(self, use_latent: bool = True, fixed: dict | None = None):
        super().__init__()
        self.use_latent, self.fixed = use_latent, fixed

    def forward(self, z, c, noise_mode="const"):
        picks = []
        for zi, i in zip(z, c.argmax(1).tolist()):
            seed = int(abs(float(zi[0])) * 1e6) if self.use_latent else 0
            picks.append(self.fixed or pf.real_draws(f"{seed} {PROMPTS[i]}", VALUES[i], k=1)[0])
        return torch.from_numpy(render_batch(picks, 32)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope="module")
def judge_model():
    return load_attribute_classifier(pf.JUDGE_WEIGHTS)


def test_prompt_sets_are_every_distinct_caption_of_each_form():
    t5, t4 = pf.prompt_set("t5", "seen"), pf.prompt_set("t4", "heldout")
    assert t5.prompts[:2] == ("red circle", "green circle") and t5.named == ("shape", "colour")
    assert len(t5.prompts) == 42 and len(pf.prompt_set("t5", "heldout").prompts) == 6
    assert len(pf.prompt_set("t0", "seen").prompts) == len(attribute_combinations("seen")) == 840
    assert t4.left_out == ("position",) and len(t4.prompts) == 6 * 2 * 2
    assert pf.prompt_set("a_shape", "seen").prompts == tuple(f"a {s}" for s in VOCABULARIES["shape"])
    assert "a_shape" not in {s.form for s in SETS if s.split == "heldout"}


def test_normalised_entropy():
    assert pf.normalised_entropy(torch.zeros(8, dtype=torch.long), 5) == 0.0
    assert pf.normalised_entropy(torch.arange(8), 8) == pytest.approx(1.0)
    assert pf.normalised_entropy(torch.tensor([0, 1] * 4), 2) == pytest.approx(1.0)
    assert pf.normalised_entropy(torch.tensor([0] * 6 + [1] * 2), 2) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    )


def test_figures_count_named_attributes_and_the_spread_of_the_others():
    prompts = pf.prompt_set("t5", "seen")  # names shape and colour
    predicted = torch.zeros(2 * 8, len(ATTRIBUTE_NAMES), dtype=torch.long)  # circle, red, small, ...
    sub = pf.PromptSet("t5", "seen", prompts.named, prompts.prompts[:2], prompts.values[:2])  # red, green circle
    colour = ATTRIBUTE_NAMES.index("colour")
    predicted[8:, colour] = VOCABULARIES["colour"].index("green")
    predicted[8:12, 0] = 1  # the green circle's first four images are squares
    predicted[:, ATTRIBUTE_NAMES.index("position")] = torch.arange(16) % 4  # four positions each
    figs = pf.figures(sub, predicted, torch.full((16, 5), 0.5))
    assert figs["named"] == pytest.approx(12 / 16) and figs["named_colour"] == 1.0
    assert figs["spread_position"] == pytest.approx(math.log(4) / math.log(5))
    assert figs["spread_size"] == figs["spread_background"] == 0.0
    assert figs["spread"] == pytest.approx(math.log(4) / math.log(5) / 3)
    assert figs["confidence"] == 0.5 and figs["prompts"] == 2


def test_real_renders_are_named_right_and_spread_like_the_data():
    reference = pf.real_reference()
    for split in pf.SPLITS:
        for form, figs in reference[split].items():
            assert figs["named"] >= 0.99 and figs["confidence"] > 0.95, (split, form)
            if form != "t0":
                assert 0.7 < figs["spread"] <= 1.0, (split, form)


def test_an_oracle_that_draws_from_its_latent_scores_like_real_renders(judge_model):
    result = pf.judge_sampler(OneHotPrompts(Draws()), judge_model)
    for split in pf.SPLITS:
        assert result[split]["count"] == len(attribute_combinations(split))
        assert min(result[split][a] for a in pf.ATTRIBUTES) >= 0.97
        for form in result["forms"][split]:
            assert result["forms"][split][form]["named"] >= 0.97, (split, form)
            ratio = pf.spread_ratio(result, split, form)
            assert ratio is None or 0.75 <= ratio <= 1.3, (split, form, ratio)
    metrics = pf.summary_metrics(result)
    assert metrics["seen/named_t5"] >= 0.97 and metrics["seen/spread_ratio_a_shape"] >= 0.75
    assert "heldout/named_a_shape" not in metrics
    table = pf.forms_table({"oracle": result})
    assert "| real renders | seen | t5 | red circle | 42 | 1.00 |" in table and "| oracle | heldout | t5 |" in table


def test_one_that_ignores_its_latent_has_no_spread(judge_model):
    prompts = pf.prompt_set("t5", "seen")
    G = Draws(use_latent=False)
    images = pf.generate(OneHotPrompts(G), prompts)
    figs = pf.figures(prompts, *pf.judged(judge_model, images))
    assert figs["named"] >= 0.97 and figs["spread"] == 0.0
    result = {"forms": {"seen": {"t5": figs}}}
    assert pf.spread_ratio(result, "seen", "t5") == 0.0


def test_one_that_ignores_the_prompt_scores_its_constant_guess(judge_model):
    fixed = {"shape": "star", "colour": "red", "size": "large", "position": "center", "background": "black"}
    prompts = pf.prompt_set("t0", "seen")
    images = pf.generate(OneHotPrompts(Draws(fixed=fixed)), prompts)
    accuracy = pf.full_caption_accuracy(prompts, pf.judged(judge_model, images)[0])
    seen = attribute_combinations("seen")
    for name in VOCABULARIES:
        share = np.mean([a[name] == fixed[name] for a in seen])
        assert accuracy[name] == pytest.approx(share, abs=0.02), name
    assert accuracy["all"] < 0.01


def test_chance_levels_and_table():
    chance = attribute_chance()
    assert chance["shape"] == pytest.approx(1 / 6) and chance["size"] == pytest.approx(0.5)
    assert chance["all"] == pytest.approx(math.prod(1 / len(v) for v in VOCABULARIES.values()))
    row = {w: {**{a: 0.5 for a in (*VOCABULARIES, "all")}, "count": 3} for w in ("seen", "heldout")}
    table = pf.markdown_table({"model": row})
    assert "| model | heldout (3) | 0.50 |" in table and "| chance | | 0.17 | 0.12 |" in table
