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


def _time_to_quality():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_quality.py"
    spec = importlib.util.spec_from_file_location("time_to_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_to_quality_counts_training_time_and_first_crossings(tmp_path):
    import json

    import pandas as pd

    ttq = _time_to_quality()
    ticks = [{"nimg": 1000, "kimg": 1.0, "s_per_kimg": 60.0}, {"nimg": 3000, "kimg": 3.0, "s_per_kimg": 30.0}]
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    assert ttq.training_minutes(tmp_path) == {1000: pytest.approx(1.0), 3000: pytest.approx(2.0)}
    rows = [
        {"run": "r", "prompts": "seen", "kimg": k, "minutes": m, "shape": s, "colour": 1.0, "position": 1.0, "all": a}
        for k, m, s, a in ((10, 1.0, 0.5, 0.1), (20, 2.0, 0.7, 0.5), (30, 3.0, 0.95, 0.9))
    ]
    reached = ttq.first_reached(pd.DataFrame(rows)).iloc[0]
    assert reached["shape >= 0.6"] == "20 kimg / 2.0 min"
    assert reached["shape >= 0.9"] == reached["all >= 0.85"] == "30 kimg / 3.0 min"
    assert reached["colour >= 0.95"] == "10 kimg / 1.0 min"
