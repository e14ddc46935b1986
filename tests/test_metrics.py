"""Metric definitions (lafite_core/metrics.py): values against hand computations and known
behaviour, protocol presets, and the results table."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from lafite_core.config import EvalConfig, ProtocolConfig, from_dict, protocol_preset
from lafite_core.metrics import (
    METRICS,
    ScoredImages,
    append_rows,
    caption_accuracy,
    clip_score,
    compute_metrics,
    frechet_distance,
    inception_score,
    kernel_distance,
    protocol_columns,
    r_precision,
    read_table,
)


def _gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    a, b = _gaussian(4000, 3, 0), _gaussian(4000, 3, 1) * 2 + 1
    # FID between N(mu_a, S_a) and N(mu_b, S_b) with diagonal covariances:
    # sum (mu_a - mu_b)^2 + sum (s_a + s_b - 2 sqrt(s_a s_b)), from the sample statistics
    mu_a, mu_b = a.double().mean(0), b.double().mean(0)
    s_a, s_b = a.double().var(0), b.double().var(0)
    expected = float(((mu_a - mu_b) ** 2).sum() + (s_a + s_b - 2 * (s_a * s_b).sqrt()).sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)  # off-diagonals are ~0, not exactly


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    a = _gaussian(300, 16, 0)
    assert abs(frechet_distance(a, a)) < 1e-6
    distances = [frechet_distance(a, a + shift) for shift in (0.1, 0.5, 1.0)]
    # a constant shift of s in all 16 dims adds exactly 16 s^2
    assert distances == pytest.approx([16 * 0.01, 16 * 0.25, 16 * 1.0], rel=1e-6)


def test_kernel_distance_is_about_zero_for_one_distribution_and_positive_for_two():
    a, b = _gaussian(400, 8, 0), _gaussian(400, 8, 1)
    same, _ = kernel_distance(a, b, subsets=20, subset_size=200, seed=0)
    shifted, _ = kernel_distance(a, b + 1.0, subsets=20, subset_size=200, seed=0)
    assert abs(same) < 0.02 and shifted > 0.2


def test_inception_score_is_the_number_of_classes_for_confident_balanced_logits():
    logits = torch.full((100, 10), -30.0)
    logits[torch.arange(100), torch.arange(100) % 10] = 30.0  # certain, and every class equally often
    mean, _ = inception_score(logits, splits=1, seed=0)
    assert mean == pytest.approx(10.0, rel=1e-4)
    mean, _ = inception_score(logits, splits=10, seed=0)  # shuffled splits of 10: fewer classes each
    assert 1.0 < mean < 10.0
    mean, _ = inception_score(torch.zeros(100, 10), splits=10, seed=0)  # uniform predictions: 1
    assert mean == pytest.approx(1.0)


def test_clip_score_of_matched_pairs_beats_shuffled_pairs_and_is_100_cos():
    text = torch.nn.functional.normalize(_gaussian(64, 32, 0), dim=1)
    images = torch.nn.functional.normalize(text + 0.1 * _gaussian(64, 32, 1), dim=1)
    matched = clip_score(images, text)
    expected = 100 * float((images * text).sum(1).mean())
    assert matched == pytest.approx(expected, rel=1e-5)
    assert matched > clip_score(images, text[torch.roll(torch.arange(64), 1)]) + 50


def test_r_precision_counts_images_whose_own_prompt_wins():
    prompts = torch.eye(8)  # 8 orthogonal prompts
    ids = torch.arange(8)
    images = prompts.clone()
    images[0] = 0.6 * prompts[0] + 0.8 * prompts[5]  # closer to prompt 5 than to its own
    images[1] = prompts[6]  # only prompt 6: its own scores 0, a tie with the rest, which is a loss
    assert r_precision(images, ids, prompts, candidates=100, seed=0) == pytest.approx(6 / 8)  # all 7 others compete
    # with one distractor, image 0 wins unless prompt 5 is drawn (1 in 7)
    values = [r_precision(images, ids, prompts, candidates=2, seed=s) for s in range(40)]
    assert set(values) == {6 / 8, 7 / 8}
    assert 0.02 < values.count(6 / 8) / len(values) < 0.4


def test_caption_accuracy_judges_only_what_the_caption_names():
    names = ("shape", "colour")
    targets = torch.tensor([[0, 1], [2, -1], [1, 1], [0, -1]])  # rows 1 and 3 do not name a colour
    predicted = torch.tensor([[0, 1], [2, 5], [1, 0], [1, 3]])
    out = caption_accuracy(predicted, targets, names)
    assert out["caption_accuracy"] == pytest.approx(2 / 4)  # rows 0 and 1
    assert out["acc_shape"] == pytest.approx(3 / 4) and out["acc_colour"] == pytest.approx(1 / 2)
    assert caption_accuracy(predicted, torch.tensor([[0, -1]] * 4), names)["acc_colour"] is None


def test_registry_entries_read_declared_features_and_write_their_columns():
    n = 64
    text = torch.nn.functional.normalize(_gaussian(n, 16, 0), dim=1)
    scored = ScoredImages(
        features={
            "clip_image": text.clone(),
            "inception_pool": _gaussian(n, 8, 1),
            "inception_logits": _gaussian(n, 5, 2),
            "attributes": torch.zeros(n, 1, dtype=torch.long),
        },
        prompt_ids=torch.arange(n),
        prompt_features=text,
        targets=torch.zeros(n, 1, dtype=torch.long),
        attribute_names=("shape",),
    )
    reference = {"clip_image": text, "inception_pool": _gaussian(n, 8, 3)}
    protocol = ProtocolConfig(num_samples=n, reference_size=n, kid_subset_size=32, kid_subsets=5)
    values = compute_metrics(METRICS.names(), scored, reference, protocol)
    assert set(values) >= {
        "fid",
        "kid",
        "kid_std",
        "is",
        "is_std",
        "clip_fid",
        "clip_kid",
        "clip_score",
        "r_precision",
        "caption_accuracy",
        "acc_shape",
    }
    assert values["clip_score"] == pytest.approx(100.0) and values["r_precision"] == 1.0
    assert abs(values["clip_fid"]) < 1e-6 and values["caption_accuracy"] == 1.0
    for name in METRICS.names():
        assert set(METRICS.get(name).features) <= set(scored.features)
    with pytest.raises(KeyError, match="unknown metric 'fdi'.*known: caption_accuracy"):
        compute_metrics(["fdi"], scored, reference, protocol)


def test_protocol_presets_by_name_and_validation():
    cpu, paper = protocol_preset("cpu"), protocol_preset("paper")
    assert cpu == EvalConfig().protocol  # the default evaluation runs the cpu protocol
    # LAFITE's reported protocol: 30k images at 256 px, each with its own latent noise
    assert (paper.name, paper.num_samples, paper.reference_size, paper.resolution, paper.noise_mode) == (
        "paper",
        30000,
        30000,
        256,
        "random",
    )
    changed = protocol_preset("paper")
    changed.num_samples = 1
    assert protocol_preset("paper") == paper  # each call gives a fresh copy
    with pytest.raises(KeyError, match="unknown protocol 'tiny'; known: cpu, fid30k_coco_train256, .*, paper"):
        protocol_preset("tiny")
    with pytest.raises(ValueError, match="protocol.kid_subset_size = 1000 exceeds num_samples"):
        from_dict(ProtocolConfig, {"num_samples": 500})
    columns = protocol_columns(paper)
    assert columns["protocol"] == "paper" and columns["num_samples"] == 30000 and "name" not in columns


def test_a_protocol_section_naming_a_preset_starts_from_it():
    named = from_dict(
        EvalConfig,
        {"protocol": {"name": "paper", "num_samples": 5000, "reference_size": 5000}, "data": {"resolution": 256}},
    ).protocol
    assert (named.name, named.num_samples, named.resolution, named.noise_mode) == ("paper", 5000, 256, "random")
    unnamed = from_dict(
        EvalConfig, {"protocol": {"num_samples": 500, "reference_size": 500, "kid_subset_size": 250}}
    ).protocol
    assert (unnamed.name, unnamed.resolution, unnamed.noise_mode) == ("cpu", 32, "const")  # the defaults
    other = from_dict(EvalConfig, {"protocol": {"name": "mine"}}).protocol
    assert dataclasses.replace(other, name="cpu") == protocol_preset("cpu")  # an unknown name is just a label


def test_results_table_appends_rows_and_reads_them_back(tmp_path):
    first = {"subject": "model", "protocol": "cpu", "num_samples": 2000, "clip_fid": 1.2345678, "acc_size": None}
    second = {"subject": "real images", "protocol": "cpu", "num_samples": 2000, "clip_fid": 0.01, "r_precision": 0.5}
    csv_path, md_path = append_rows([first], "eval", tmp_path)
    append_rows([second], "eval", tmp_path)
    rows = read_table("eval", tmp_path)
    assert len(rows) == 2
    assert rows[0]["subject"] == "model" and float(rows[0]["clip_fid"]) == pytest.approx(1.2345678)
    assert rows[0]["acc_size"] == "" and rows[0]["r_precision"] == ""  # a column added later is empty
    assert rows[1]["r_precision"] == "0.5" and rows[1]["num_samples"] == "2000"
    with open(csv_path, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["subject", "protocol", "num_samples", "clip_fid", "acc_size", "r_precision"]
    md = md_path.read_text().splitlines()
    # the Markdown table: what a row is, then its metrics with the way each improves, then the protocol
    assert md[0] == "| subject | clip_fid ↓ | acc_size ↑ | r_precision ↑ | protocol | num_samples |" and len(md) == 4
    assert "| model | 1.235 |  |  | cpu | 2000 |" in md[2] and "real images" in md[3]
    assert np.isclose(float(read_table("eval", tmp_path)[1]["clip_fid"]), 0.01)
