"""Contrastive pre-training of the tiny encoder, its loss, saving/loading, and zero-shot scoring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lafite_core.config import EncoderConfig, PretrainConfig
from lafite_core.data.shapes import (
    CAPTION_TEMPLATES,
    VOCABULARIES,
    ShapesDataset,
    caption_for,
    fill_template,
    template_attributes,
)
from lafite_core.encoder_training import (
    ShapesPairs,
    caption_positives,
    clip_loss,
    evaluate_encoder,
    images_to_tensor,
    make_optimizer,
    pretrain_encoder,
    save_weights,
    train_step,
)
from lafite_core.encoders import file_sha256, load_encoder
from lafite_core.zero_shot import attribute_accuracy, label_indices, predict_attributes, prompt_accuracy

RED_STAR = {"shape": "star", "colour": "red", "size": "small", "position": "top left", "background": "black"}


def test_clip_loss_is_clips_symmetric_cross_entropy():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    scale = torch.tensor(2.0)
    logits = scale.exp() * img @ txt.T
    expected = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    torch.testing.assert_close(clip_loss(img, txt, scale), expected)


def test_clip_loss_spreads_targets_over_all_captions_that_describe_an_image():
    img = torch.eye(3)
    txt = torch.eye(3)
    positives = torch.tensor(
        [[True, True, False], [False, True, False], [False, False, True]]
    )  # caption 1 fits images 0, 1
    logits = img @ txt.T  # scale exp(0) = 1
    log_rows, log_cols = F.log_softmax(logits, 1), F.log_softmax(logits, 0)
    image_to_text = [-(log_rows[0, 0] + log_rows[0, 1]) / 2, -log_rows[1, 1], -log_rows[2, 2]]
    text_to_image = [-log_cols[0, 0], -(log_cols[0, 1] + log_cols[1, 1]) / 2, -log_cols[2, 2]]
    expected = (sum(image_to_text) / 3 + sum(text_to_image) / 3) / 2
    torch.testing.assert_close(clip_loss(img, txt, torch.tensor(0.0), positives), expected)
    no_positive = positives.clone()
    no_positive[2, 2] = False  # image 2 and caption 2 would have no positive at all
    with pytest.raises(ValueError, match="at least one positive"):
        clip_loss(img, txt, torch.tensor(0.0), no_positive)


def test_caption_positives_follow_the_attributes_a_caption_names():
    labels = torch.tensor([[0, 0], [0, 1], [1, 1]])  # (shape, colour) of three images
    mentions = torch.tensor([[True, True], [False, True], [True, False]])  # caption 1 names only colour
    expected = torch.tensor(
        [
            [True, False, False],  # image 0: own caption only (caption 1 says colour 1, caption 2 shape 1)
            [False, True, False],  # image 1: caption 1 (colour 1) is its own
            [False, True, True],  # image 2: colour 1 like caption 1, shape 1 like caption 2
        ]
    )
    assert torch.equal(caption_positives(labels, labels, mentions), expected)
    # two captions per image: captions 0, 1 written for image 0, captions 2, 3 for image 1
    caption_labels = labels[[0, 0, 1, 1]]
    two = torch.tensor([[True, True], [True, False], [True, True], [False, True]])
    assert caption_positives(labels[:2], caption_labels, two).tolist() == [
        [True, True, False, False],  # caption 3 ("colour 1") does not fit image 0 (colour 0)
        [False, True, True, True],  # caption 1 ("shape 0") fits image 1 too
    ]


def test_templates_name_their_attributes():
    assert template_attributes("{colour} {shape}, {position_short}") == {"colour", "shape", "position"}
    assert fill_template("a {colour} {shape} {position_long}", RED_STAR) == "a red star in the top left corner"
    assert fill_template(
        "a {size} {colour} {shape} {position_long} on a {background} background", RED_STAR
    ) == caption_for(RED_STAR, 0)


def test_pairs_exclude_the_test_split_and_come_in_range():
    pairs = ShapesPairs(resolution=32, seed=0)
    from lafite_core.data.shapes import split_tuples

    tuples = split_tuples(0)
    assert len(pairs) == len(tuples["train"]) + len(tuples["heldout"]) == len(tuples["all"]) - len(tuples["test"])
    batch = pairs.batch(6, torch.Generator().manual_seed(0), captions_per_image=3)
    assert batch["images"].shape == (6, 3, 32, 32) and -1 <= batch["images"].min() <= batch["images"].max() <= 1
    assert batch["labels"].shape == (6, 5) and len(batch["captions"]) == 18
    assert batch["caption_labels"].shape == batch["mentions"].shape == (18, 5)
    positives = caption_positives(batch["labels"], batch["caption_labels"], batch["mentions"])
    assert positives[torch.arange(18) // 3, torch.arange(18)].all()  # each caption fits its own image
    one = ShapesPairs(32, 0).batch(6, torch.Generator().manual_seed(0))
    assert len(one["captions"]) == 6 and torch.equal(one["caption_labels"], one["labels"])


def test_groups_are_an_image_and_siblings_that_differ_in_one_attribute_and_never_test_images():
    from lafite_core.data.shapes import SPACE_DIMS, split_tuples

    pairs = ShapesPairs(resolution=32, seed=0)
    numbers = pairs.numbers(400, torch.Generator().manual_seed(3), group_size=4)
    assert len(numbers) == 400 and not set(numbers) & set(split_tuples(0)["test"].tolist())
    digits = torch.tensor([list(np.unravel_index(n, SPACE_DIMS)) for n in numbers]).reshape(100, 4, -1)[..., :5]
    changed = (digits[:, 1:] != digits[:, :1]).sum(-1)  # attributes that differ from the group's first
    assert (changed == 1).all()
    assert set((digits[:, 1:] != digits[:, :1]).float().argmax(-1).flatten().tolist()) == set(range(5))
    batch = pairs.batch(8, torch.Generator().manual_seed(0), group_size=4)
    assert batch["labels"].shape == (8, 5) and ((batch["labels"][1:4] != batch["labels"][0]).sum(1) == 1).all()
    with pytest.raises(ValueError, match="group_size must divide batch_size"):
        pairs.numbers(6, torch.Generator(), group_size=4)


@pytest.mark.slow
def test_loss_goes_down_and_weights_round_trip_through_open_clip(tmp_path):
    torch.manual_seed(0)
    encoder = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=None))
    encoder.model.requires_grad_(True)
    cfg = PretrainConfig(lr=1e-3, weight_decay=0.0)
    optimizer = make_optimizer(encoder.model, cfg)
    batch = ShapesPairs(32, 0).batch(12, torch.Generator().manual_seed(1))
    losses = [train_step(encoder, batch, optimizer) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0], losses

    path = tmp_path / "w.safetensors"
    save_weights(encoder.model, path)
    loaded = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(path)))
    assert loaded.identity()["weights_sha256"] == file_sha256(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(batch["images"]), encoder.encode_image(batch["images"]))
        torch.testing.assert_close(loaded.encode_text(batch["captions"]), encoder.encode_text(batch["captions"]))


@pytest.mark.slow
def test_pretrain_encoder_writes_weights_curve_and_metrics(tmp_path):
    cfg = PretrainConfig(steps=3, batch_size=8, warmup_steps=1, eval_images=12, output_dir=str(tmp_path))
    seen = []
    result = pretrain_encoder(cfg, on_log=seen.append)
    assert [r["step"] for r in seen] == [1, 2, 3]
    assert result.weights == tmp_path / "lafite-tiny-shapes.safetensors" and result.weights.is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["weights_sha256"] == file_sha256(result.weights)
    # the numbers describe the written weights: computed again from the file, the cosine directly
    written = load_encoder(EncoderConfig(name=cfg.architecture, pretrained=str(result.weights)))
    again = evaluate_encoder(written, cfg.resolution, cfg.dataset_seed, cfg.eval_images)
    for attribute in VOCABULARIES:
        assert metrics[f"given_others/{attribute}"] == pytest.approx(again["given_others"][attribute])
    items = [it for it in ShapesDataset(cfg.resolution, size=cfg.eval_images, seed=cfg.dataset_seed, split="test")]
    with torch.no_grad():
        image = written.encode_image(images_to_tensor(np.stack([it.image for it in items])))
        cosines = [
            F.cosine_similarity(image, written.encode_text([caption_for(it.attributes, t) for it in items]))
            for t in range(len(CAPTION_TEMPLATES))
        ]
    assert metrics["matching_cosine"] == pytest.approx(float(torch.stack(cosines).mean()), abs=1e-5)
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert json.loads((tmp_path / "provenance.json").read_text())["config"]["steps"] == 3


@pytest.mark.slow
def test_a_killed_pretraining_run_continues_from_its_checkpoint_to_the_same_weights(tmp_path):
    settings = dict(steps=4, batch_size=8, warmup_steps=1, eval_every=2, eval_images=6)
    whole = pretrain_encoder(PretrainConfig(output_dir=str(tmp_path / "whole"), **settings), progress=False)

    class Killed(Exception):
        pass

    def die_at_step_3(record):
        if record["step"] == 3:
            raise Killed

    cfg = PretrainConfig(output_dir=str(tmp_path / "killed"), **settings)
    with pytest.raises(Killed):
        pretrain_encoder(cfg, on_log=die_at_step_3, progress=False)
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()] == ["checkpoint-0000000016.pt"]
    seen = []
    resumed = pretrain_encoder(cfg, on_log=seen.append, progress=False)
    assert [r["step"] for r in seen] == [3, 4]  # steps 1-2 came from the checkpoint
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in whole.history], rel=1e-5)
    history = [json.loads(line) for line in (tmp_path / "killed" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    from safetensors.torch import load_file

    expected, got = load_file(whole.weights), load_file(resumed.weights)
    assert expected.keys() == got.keys()
    for name in expected:  # the files differ only in their metadata (output_dir)
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="other parameters"):
        pretrain_encoder(PretrainConfig(output_dir=str(tmp_path / "killed"), **{**settings, "lr": 0.5}), progress=False)


# ------------------------------------------------------------------------------ zero-shot scoring
VOCAB = {"shape": ("circle", "square"), "colour": ("red", "green", "blue")}


def _combo_codes() -> torch.Tensor:
    """An orthonormal text feature per (shape, colour) combination: [2, 3, 6]."""
    return torch.eye(6).reshape(2, 3, 6)


def test_predictions_read_the_right_attribute_in_both_modes():
    combos = _combo_codes()
    labels = torch.tensor([[0, 2], [1, 0], [1, 1]])
    # image 0 looks most like (circle, green) but, given its true colour blue, more like a circle than a square
    images = torch.stack([combos[0, 1] + 0.5 * combos[0, 2] + 0.2 * combos[1, 2], combos[1, 0], combos[1, 1]])
    given = predict_attributes(images, labels, combos, "given_others")
    best = predict_attributes(images, labels, combos, "best_caption")
    assert given.tolist() == [[0, 1], [1, 0], [1, 1]]  # colour is judged among circles: green wins
    assert best.tolist() == [[0, 1], [1, 0], [1, 1]]
    images[0] = combos[0, 1] * 0.1 + combos[1, 2]  # now clearly a blue square; given shape circle, the colour is green
    given = predict_attributes(images, labels, combos, "given_others")
    assert given[0].tolist() == [1, 1]
    with pytest.raises(ValueError, match="given_others, best_caption"):
        predict_attributes(images, labels, combos, "vote")


class CodeEncoder:
    """Encodes 'a <colour> <shape>' to the combination's one-hot code (a perfect text tower)."""

    def encode_text(self, captions):
        out = []
        for caption in captions:
            words = caption.split()
            shape = next(i for i, s in enumerate(VOCAB["shape"]) if s in words)
            colour = next(i for i, c in enumerate(VOCAB["colour"]) if c in words)
            out.append(_combo_codes()[shape, colour])
        return torch.stack(out)


def test_attribute_accuracy_counts_right_answers_per_attribute():
    attributes = [
        {"shape": "circle", "colour": "red"},
        {"shape": "square", "colour": "blue"},
        {"shape": "square", "colour": "green"},
        {"shape": "circle", "colour": "blue"},
    ]
    codes = _combo_codes()
    images = torch.stack(
        [
            codes[0, 0],
            codes[1, 2],
            codes[1, 2] + 0.5 * codes[1, 1],  # a square, but bluer than green: colour wrong
            codes[1, 2] + 0.5 * codes[0, 2],
        ]
    )  # blue, but more square than circle: shape wrong
    accuracy = attribute_accuracy(CodeEncoder(), images, attributes, VOCAB, lambda a: f"a {a['colour']} {a['shape']}")
    assert accuracy == {"shape": 0.75, "colour": 0.75}
    assert label_indices(attributes, VOCAB).tolist() == [[0, 0], [1, 2], [1, 1], [0, 2]]
    with pytest.raises(ValueError, match="'purple' is not in its vocabulary"):
        label_indices([{"shape": "circle", "colour": "purple"}], VOCAB)


def test_prompt_accuracy_uses_one_prompt_per_class():
    class Fixed:
        def encode_text(self, captions):
            return torch.eye(3)[[["red", "green", "blue"].index(c.split()[1]) for c in captions]]

    images = torch.eye(3)[[0, 1, 1, 2]]
    prompts = {c: f"a {c} shape" for c in ("red", "green", "blue")}
    assert prompt_accuracy(Fixed(), images, ["red", "green", "blue", "blue"], prompts) == 0.75
    with pytest.raises(ValueError, match="no prompt"):
        prompt_accuracy(Fixed(), images, ["red", "pink", "blue", "blue"], prompts)


# ------------------------------------------------------------------------------ the shipped weights
def test_shipped_weights_resolve_by_their_repository_path():
    from lafite_core.assets import TINY_ENCODER_WEIGHTS, resolve_asset

    assert resolve_asset("lafite_core/assets/lafite-tiny-shapes.safetensors") in (
        "lafite_core/assets/lafite-tiny-shapes.safetensors",
        str(TINY_ENCODER_WEIGHTS),
    )
    assert resolve_asset("/no/such/weights.safetensors") == "/no/such/weights.safetensors"


# each shipped encoder: its weights, its provenance note, and the matched cosine range it claims
SHIPPED_ENCODERS = {
    "first": ("lafite-tiny-shapes", (0.45, 0.6)),
    "cliplike": ("lafite-tiny-shapes-cliplike", (0.2, 0.36)),
}


@pytest.mark.parametrize("which", SHIPPED_ENCODERS)
def test_shipped_weights_load_like_a_clip_file_and_classify_unseen_shapes(which):
    from lafite_core.assets import ASSETS_DIR
    from lafite_core.encoder_training import evaluate_encoder

    stem, (low, high) = SHIPPED_ENCODERS[which]
    weights = ASSETS_DIR / f"{stem}.safetensors"
    assert weights.stat().st_size <= 20 * 2**20
    encoder = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(weights)))
    provenance = json.loads((ASSETS_DIR / f"{stem}.json").read_text())
    assert provenance["weights_sha256"] == encoder.identity()["weights_sha256"]
    assert low <= provenance["zero_shot_on_unseen_test_images"]["matching_cosine"] <= high
    metrics = evaluate_encoder(encoder, resolution=32, dataset_seed=0, images=200)
    for attribute in VOCABULARIES:  # the full 2000-image figures are in the provenance file
        assert metrics["given_others"][attribute] >= 0.9, (attribute, metrics["given_others"])
    assert low <= metrics["matching_cosine"] <= high
