"""The authors' behaviour as options: their training presets, CLIP's view of small fakes, noise
redrawn in every phase, and evaluation protocols named the way papers name them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from training_fixtures import TinyImageTextSet, tiny_config

from lafite_core.config import (
    DataConfig,
    EvalConfig,
    LossConfig,
    PerturbationConfig,
    ProtocolConfig,
    TrainConfig,
    protocol_preset,
    to_dict,
)
from lafite_core.evaluation import load_eval_config
from lafite_core.losses import LafiteLoss, white_canvas_view
from lafite_core.metrics import protocol_columns
from lafite_core.networks import Discriminator, Generator
from lafite_core.params import load_yaml
from lafite_core.training import Trainer

PRESETS = ["official_coco_language_free", "official_coco_standard", "official_cub", "official_mm_celeba_hq"]


def preset(name: str) -> TrainConfig:
    return load_yaml(Path("params") / f"{name}.yaml", TrainConfig)


def flat(cfg) -> dict:
    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from walk(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    return dict(walk(to_dict(cfg)))


def differences(a, b) -> set[str]:
    fa, fb = flat(a), flat(b)
    return {k for k in fa if fa[k] != fb[k]}


# ------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", PRESETS)
def test_official_presets_validate_and_build_the_authors_networks(name):
    cfg = preset(name)
    with torch.device("meta"):
        G, D = Generator(cfg.network, 512), Discriminator(cfg.network, 512)
    counts = (sum(p.numel() for p in G.parameters()), sum(p.numel() for p in D.parameters()))
    assert counts == (44_997_026, 29_126_785)  # the authors' G and D at 256 px
    assert (cfg.loss.contrastive_form, cfg.perturbation.redraw, cfg.batch_size) == ("official", "per_phase", 64)


def test_official_presets_differ_only_where_the_authors_runs_do():
    free, standard = preset("official_coco_language_free"), preset("official_coco_standard")
    assert differences(free, standard) == {"setting", "loss.lambda_disc", "run_dir"}
    assert (standard.setting, standard.loss.lambda_disc) == ("standard", 5.0)
    for name in ("official_cub", "official_mm_celeba_hq"):
        assert differences(standard, preset(name)) == {
            "loss.r1_gamma",
            "data.kind",
            "data.root",
            "cache",
            "run_dir",
            "progress_prompts",
        }


# ------------------------------------------------------------------------------ CLIP's view
def test_white_canvas_view_pastes_without_resizing_at_one_offset_per_batch():
    leaf = torch.rand(2, 3, 16, 16, requires_grad=True)
    images = leaf * 2 - 1  # in [-1, 1): never the canvas's white
    torch.manual_seed(0)
    out = white_canvas_view(images, 40)
    assert out.shape == (2, 3, 40, 40)
    inside = (out != 1).all(dim=0).all(dim=0).nonzero()
    top, left = inside.min(dim=0).values.tolist()
    torch.testing.assert_close(out[:, :, top : top + 16, left : left + 16], images, rtol=0, atol=0)
    border = out.clone()
    border[:, :, top : top + 16, left : left + 16] = 1
    assert (border == 1).all()
    out.sum().backward()
    torch.testing.assert_close(leaf.grad, torch.full_like(leaf, 2.0))  # differentiable, pixel for pixel

    offsets = set()
    for seed in range(300):
        torch.manual_seed(seed)
        canvas = white_canvas_view(torch.zeros(1, 3, 16, 16), 40)
        offsets.add(tuple((canvas[0, 0] == 0).nonzero().min(dim=0).values.tolist()))
    rows, cols = {o[0] for o in offsets}, {o[1] for o in offsets}
    assert min(rows) == min(cols) == 0 and max(rows) == max(cols) == 40 - 16 - 1  # randint(0, 224 - size)


class RecordingEncoder:
    """Stands in for CLIP: records what it is shown."""

    image_size = 40

    def __init__(self):
        self.seen = []

    def encode_image(self, images, augment=False):
        self.seen.append((tuple(images.shape), augment, images.detach().clone()))
        return F.normalize(images.flatten(1)[:, :8], dim=1)


@pytest.mark.parametrize("view,size,expected", [("official", 16, (40, False)), ("resize", 16, (16, True))])
def test_clip_view_decides_how_small_fakes_reach_clip(view, size, expected):
    encoder = RecordingEncoder()
    loss = LafiteLoss(None, None, encoder, LossConfig(clip_view=view))
    loss.clip_features(torch.zeros(2, 3, size, size))
    (shape, augment, shown) = encoder.seen[0]
    assert (shape[-1], augment) == expected
    if view == "official":
        assert (shown == 1).float().mean().item() == pytest.approx(1 - 16**2 / 40**2)  # white around the fake
    loss.clip_features(torch.zeros(2, 3, 48, 48))  # as large as CLIP's input: the random crop view
    assert encoder.seen[1][:2] == ((2, 3, 48, 48), True)


# ------------------------------------------------------------------------------ redraw
@pytest.mark.parametrize("redraw", ["per_step", "per_phase"])
def test_conditions_are_redrawn_in_every_phase_only_when_asked(redraw, tmp_path):
    perturbation = PerturbationConfig(kind="official", redraw=redraw)
    trainer = Trainer(tiny_config(tmp_path, perturbation=perturbation), TinyImageTextSet())
    seen = {}

    def recorder(phase, c_position):
        def record(*args):
            seen[phase] = args[c_position].clone()
            return torch.zeros((), requires_grad=True), {}

        return record

    trainer.loss.generator_main = recorder("G", 1)
    trainer.loss.generator_path_length = recorder("G_reg", 1)
    trainer.loss.discriminator_main = recorder("D", 2)
    trainer.loss.discriminator_r1 = recorder("D_reg", 1)
    trainer.train_step(next(trainer.batches))  # step 0: all four phases run
    assert sorted(seen) == ["D", "D_reg", "G", "G_reg"]
    draws = list(seen.values())
    same = [torch.equal(draws[0], d) for d in draws[1:]]
    assert same == ([True] * 3 if redraw == "per_step" else [False] * 3)
    for c in draws:  # every draw is a set of pseudo text features of the same images
        torch.testing.assert_close(c.norm(dim=1), torch.ones(len(c)))


# ------------------------------------------------------------------------------ evaluation names
NAMED = [n for n in ProtocolConfig.PRESETS if n.startswith("fid")]


@pytest.mark.parametrize("name", NAMED)
def test_named_protocols_fix_and_record_their_reference_set(name):
    protocol = protocol_preset(name)
    columns = protocol_columns(protocol)
    assert columns["protocol"] == name and columns["reference_dataset"] in name
    assert f"_{columns['reference_split']}256" in name and columns["resolution"] == 256
    assert f"fid{columns['num_samples'] // 1000}k_" in name
    data = DataConfig(kind=protocol.reference_dataset, resolution=256, split="val")
    EvalConfig(data=data, protocol=protocol, heldout_split=None)
    with pytest.raises(ValueError, match=f"protocol {name!r} compares against {protocol.reference_dataset}"):
        EvalConfig(data=dataclasses.replace(data, kind="shapes"), protocol=protocol, heldout_split=None)


def test_a_named_protocol_replaces_a_params_files_protocol():
    cfg = load_eval_config("params/evaluate_paper.yaml", [], "fid30k_coco_train256")
    assert (cfg.protocol.reference_split, cfg.protocol.reference_size, cfg.data.split) == ("train", 82783, "val")
