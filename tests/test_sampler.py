"""The sampler library: loading generators safely, prompts -> images, seeds, truncation,
interpolation, grids, and the errors a user meets. A small untrained generator with a randomly
initialised (but saved, so identifiable) tiny encoder stands in for a trained one; the shipped demo
generator is checked separately."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lafite_core import checkpoint as ckpt
from lafite_core.config import DataConfig, EncoderConfig, NetworkConfig, SampleConfig, TrainConfig, to_dict
from lafite_core.encoders import load_encoder
from lafite_core.grids import image_grid, latents, save_grid
from lafite_core.networks import Generator
from lafite_core.sampler import (
    DEMO_GENERATOR,
    GENERATOR_FORMAT,
    GENERIC_EXAMPLE_PROMPTS,
    Sampler,
    available_generators,
    export_generator,
    interpolate_conditions,
    read_generator,
    sample_from_config,
)

NETWORK = dict(resolution=32, z_dim=16, w_dim=16, mapping_layers=2, channel_base=256, channel_max=16)


def make_run(folder: Path, encoder_seed: int = 0, nimg: int = 64) -> tuple[Path, Path]:
    """A run folder with one checkpoint in the trainer's format; returns (run folder, encoder file)."""
    from safetensors.torch import save_file

    torch.manual_seed(encoder_seed)
    encoder = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=None))
    weights = folder / "encoder.safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, str(weights))
    encoder = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(weights)))
    network = NetworkConfig(**NETWORK, feature_dim=encoder.feature_dim)
    cfg = TrainConfig(
        encoder=EncoderConfig(name="lafite-tiny", pretrained=str(weights)),
        network=network,
        data=DataConfig(resolution=32),
        run_dir=str(folder),
    )
    torch.manual_seed(1)
    G = Generator(network, encoder.feature_dim)
    with torch.no_grad():  # a non-zero w_avg, so truncation has somewhere to pull to
        G.mapping_network.w_avg.normal_()
    state = {
        "config": ckpt.to_json_string(to_dict(cfg)),
        "encoder_identity": ckpt.to_json_string(encoder.identity()),
        "G": ckpt.module_state(G),
        "G_ema": ckpt.module_state(G),
        "step": 4,
        "nimg": nimg,
    }
    ckpt.save_checkpoint(state, folder / "checkpoints", nimg)
    return folder, weights


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "tiny-run")[0]


@pytest.fixture(scope="module")
def sampler(run) -> Sampler:
    return Sampler.load(run)


def test_loads_a_run_folder_a_checkpoint_file_and_an_export_alike(run, sampler, tmp_path):
    z_images = sampler.generate("a red circle", n=3, seed=5)
    from_file = Sampler.load(ckpt.latest_checkpoint(run / "checkpoints"))
    exported = export_generator(run, tmp_path / "g.safetensors")
    from_export = Sampler.load(exported)
    torch.testing.assert_close(from_file.generate("a red circle", n=3, seed=5), z_images, rtol=0, atol=0)
    torch.testing.assert_close(from_export.generate("a red circle", n=3, seed=5), z_images, rtol=0, atol=0)
    _, info = read_generator(exported)
    assert info["nimg"] == 64 and info["encoder_identity"] == sampler.encoder.identity()
    assert exported.stat().st_size < ckpt.latest_checkpoint(run / "checkpoints").stat().st_size


def test_generate_gives_n_images_per_prompt_in_range(sampler):
    images = sampler.generate(["a red circle", "a blue square"], n=3, seed=0)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert torch.isfinite(images).all()
    # rows of one prompt share nothing but the prompt; the two prompts' conditions differ
    assert not torch.equal(images[:3], images[3:])
    single = sampler.generate("a red circle", n=3, seed=0)
    torch.testing.assert_close(single, images[:3], rtol=0, atol=1e-5)  # batch size changes float sums only


def test_same_seed_same_images_and_seed_i_is_image_i(sampler):
    a = sampler.generate("a green star", n=4, seed=10)
    b = sampler.generate("a green star", n=4, seed=10)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    shifted = sampler.generate("a green star", n=2, seed=12)  # seeds 12, 13 = images 2, 3 above
    torch.testing.assert_close(shifted, a[2:], rtol=0, atol=1e-5)
    assert not torch.allclose(sampler.generate("a green star", n=4, seed=11), a)


def test_latents_are_one_generator_per_seed():
    z = latents(3, 2, 8)
    torch.testing.assert_close(z[1], torch.randn(8, generator=torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="at least 1"):
        latents(0, 0, 8)


def test_truncation_psi_zero_gives_the_average_w_for_every_seed(sampler):
    images = sampler.generate("a red circle", n=3, seed=0, psi=0.0)
    torch.testing.assert_close(images[0], images[1]), torch.testing.assert_close(images[0], images[2])
    assert not torch.allclose(
        sampler.generate("a red circle", n=2, psi=1.0)[0], sampler.generate("a red circle", n=2, psi=1.0)[1]
    )
    with pytest.raises(ValueError, match="psi"):
        sampler.generate("a red circle", psi=float("nan"))


def test_interpolation_endpoints_are_the_prompts_images(sampler):
    a, b = "a red circle", "a blue square"
    ends = sampler.interpolate(a, b, [0.0, 1.0], n=2, seed=7)
    torch.testing.assert_close(ends[:2], sampler.generate(a, n=2, seed=7), rtol=0, atol=1e-5)
    torch.testing.assert_close(ends[2:], sampler.generate(b, n=2, seed=7), rtol=0, atol=1e-5)
    middle = sampler.interpolate(a, b, 0.5, n=2, seed=7)
    assert middle.shape == (2, 3, 32, 32)
    assert not torch.allclose(middle, ends[:2]) and not torch.allclose(middle, ends[2:])


def test_interpolated_conditions_are_unit_and_symmetric():
    a = torch.nn.functional.normalize(torch.tensor([1.0, 0.0, 1.0]), dim=0)
    b = torch.tensor([0.0, 1.0, 0.0])
    c = interpolate_conditions(a, b, [0.0, 0.5, 1.0])
    torch.testing.assert_close(c.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(c[0], a), torch.testing.assert_close(c[2], b)
    # the midpoint of two unit vectors, projected back to the sphere, is their normalised sum
    torch.testing.assert_close(c[1], (a + b) / (a + b).norm())


def test_grid_file_written_and_read_back(sampler, tmp_path):
    images = sampler.generate(["a red circle", "a blue square"], n=3)
    path = save_grid(images, tmp_path / "sub" / "grid.png", columns=3, scale=2)
    read = np.asarray(Image.open(path))
    assert read.shape == (2 * 64, 3 * 64, 3)
    expected = ((images[4].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(read[64::2, 64:128:2], expected)  # row 1, column 1, every 2nd pixel


def test_grid_captions_add_a_band_per_row(sampler, tmp_path):
    images = sampler.generate("a red circle", n=4)
    plain = image_grid(images, columns=2, scale=2)
    captioned = image_grid(images, columns=2, scale=2, captions=["first row", "second row " * 20])
    assert captioned.width == plain.width and captioned.height > plain.height
    band = (captioned.height - plain.height) // 2
    top = np.asarray(captioned)[:band]
    assert (top < 128).any(), "the caption's text is drawn in the band"
    with pytest.raises(ValueError, match="captions for 2 rows"):
        image_grid(images, columns=2, captions=["only one"])


def test_clear_errors(run, sampler, tmp_path):
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        sampler.generate("   ")
    with pytest.raises(ValueError, match="no prompt"):
        sampler.generate([])
    with pytest.raises(FileNotFoundError, match="generator not found"):
        Sampler.load(tmp_path / "nothing-here.pt")
    empty_run = tmp_path / "empty-run"
    empty_run.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        Sampler.load(empty_run)
    not_a_generator = tmp_path / "weights.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(not_a_generator))
    with pytest.raises(ValueError, match=GENERATOR_FORMAT):
        Sampler.load(not_a_generator)
    garbage = tmp_path / "checkpoint-0000000001.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="parameter checkpoint = .* is not a weights file: it appears to be text"):
        Sampler.load(garbage)


def test_incompatible_checkpoints_are_refused(run, tmp_path):
    # weights that do not fit the network the checkpoint describes
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))
    config = json.loads(state["config"])
    config["network"]["channel_max"] = 8
    state["config"] = json.dumps(config)
    ckpt.save_checkpoint({k: v for k, v in state.items() if k != "format"}, tmp_path / "bad", 1)
    with pytest.raises(ValueError, match="do not fit"):
        Sampler.load(tmp_path / "bad")
    # an encoder other than the one the generator was trained with
    other_run, other_weights = make_run(tmp_path / "other", encoder_seed=1)
    other = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(other_weights)))
    with pytest.raises(ValueError, match="encoder mismatch: .*weights_sha256"):
        Sampler.load(run, encoder=other)
    # the encoder weights the generator names are gone
    other_weights.unlink()
    with pytest.raises(FileNotFoundError, match="encoder weights .* are missing"):
        Sampler.load(other_run)


def test_available_generators_lists_shipped_then_runs(run, tmp_path):
    found = available_generators(run.parent)
    assert found[f"run: {run.name}"] == str(run)
    runner_run = tmp_path / "02_train-abc" / "out"  # where the runner's training writes
    (runner_run / "checkpoints").mkdir(parents=True)
    import shutil

    shutil.copy(ckpt.latest_checkpoint(run / "checkpoints"), runner_run / "checkpoints")
    (tmp_path / "empty-run" / "checkpoints").mkdir(parents=True)
    ablation_point = tmp_path / "03_ablation-def" / "out" / "train"  # where an ablation point trains
    (ablation_point / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt.latest_checkpoint(run / "checkpoints"), ablation_point / "checkpoints")
    assert {k: v for k, v in available_generators(tmp_path).items() if k.startswith("run:")} == {
        "run: 02_train-abc": str(runner_run),
        "run: 03_ablation-def": str(ablation_point),
    }
    shipped = [label for label in found if label.startswith("shipped:")]
    assert shipped == [
        "shipped: demo-generator",
        "shipped: demo-generator-cliplike",
        "shipped: demo-generator-no-noise",
    ]
    assert list(found).index(f"run: {run.name}") == len(shipped)


def test_sample_from_config_writes_grid_and_summary(run, tmp_path):
    cfg = SampleConfig(
        checkpoint=str(run),
        prompts=["a red circle", "a blue square"],
        n=3,
        seed=2,
        scale=2,
        out_dir=str(tmp_path / "out"),
    )
    summary = sample_from_config(cfg)
    grid = Image.open(summary["grid"])
    assert grid.width == 3 * 64 and grid.height > 2 * 64  # two rows plus caption bands
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["images"] == 6 and saved["prompts"] == cfg.prompts and saved["resolution"] == 32
    assert saved["notices"] == []
    assert sample_from_config(SampleConfig(checkpoint=str(run), out_dir=str(tmp_path / "none"))) == {}
    assert not (tmp_path / "none").exists()


def test_compile_draws_the_eager_images_from_sampler_and_config(run, sampler, tmp_path, monkeypatch):
    """aot_eager stands in for inductor (test_compiled.py runs inductor itself)."""
    compiled, real = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn: compiled.append(fn) or real(fn, backend="aot_eager"))
    try:
        fast = Sampler.load(run, compile=True)
        assert compiled == [fast.G]
        expected = sampler.generate("a red circle", n=3, seed=5)
        assert (fast.generate("a red circle", n=3, seed=5) - expected).abs().max() < 1e-5
        cfg = SampleConfig(
            checkpoint=str(run), prompts=["a red circle"], n=3, seed=5, out_dir=str(tmp_path), compile=True
        )
        assert sample_from_config(cfg)["images"] == 3 and len(compiled) == 2
    finally:
        torch._dynamo.reset()


def test_the_shipped_demo_generator_loads_offline_and_draws_the_prompted_colours():
    from lafite_core.assets import ASSETS_DIR
    from lafite_core.attribute_classifier import load_attribute_classifier
    from lafite_core.data.shapes import VOCABULARIES

    assert DEMO_GENERATOR.stat().st_size <= 30 * 2**20
    sampler = Sampler.load(DEMO_GENERATOR)
    assert sampler.encoder.identity()["weights_sha256"] == sampler.info["encoder_identity"]["weights_sha256"]
    colours = list(VOCABULARIES["colour"])
    images = sampler.generate([f"a large {c} square in the center on a black background" for c in colours], n=4, seed=0)
    assert images.shape == (32, 3, sampler.resolution, sampler.resolution)
    judge = load_attribute_classifier(ASSETS_DIR / "attribute-classifier.safetensors")
    colour = judge.attribute_names.index("colour")
    right = judge.predict(images)[:, colour] == torch.arange(len(colours)).repeat_interleave(4)
    assert right.float().mean() >= 0.6  # chance 1/8; measured 0.875 (demo-generator.md)
    held_out = sampler.generate(["a red star"], n=8, seed=0)  # a pair no training image shows
    assert (judge.predict(held_out)[:, colour] == colours.index("red")).float().mean() >= 0.75  # measured 1.0


def test_prompts_cut_at_the_context_or_mostly_unknown_get_a_notice(sampler, run, tmp_path, capsys):
    long = " ".join(["a small red triangle in the top left corner"] * 4)
    notes = sampler.notices(["a red circle", long, "qxzv glorpt zzyzzx star"])
    assert len(notes) == 2
    assert notes[0].startswith("prompt 'a small red triangle in the top left ...' has ") and "context of 32" in notes[0]
    assert notes[0].endswith("cut: 'triangle in the top left corner'") and long not in notes[0]  # what was cut
    assert "knows 1 of its 4 words" in notes[1]
    assert not sampler.knows_only_shapes and sampler.vocabulary is None  # an encoder of its own: tokenizer rule
    assert sampler.example_prompts() == list(GENERIC_EXAMPLE_PROMPTS)
    summary = sample_from_config(SampleConfig(checkpoint=str(run), prompts=[long], n=1, out_dir=str(tmp_path)))
    assert summary["notices"] == notes[:1] and f"notice: {notes[0]}" in capsys.readouterr().err


def test_a_shapes_encoder_knows_the_caption_words_and_says_what_it_never_read():
    """The shipped encoders read only Shapes captions: a word outside them is unknown, whatever the
    tokenizer spells; a background Shapes never draws is named, though "white" is a known colour."""
    from lafite_core.data.shapes import BACKGROUNDS, CAPTION_TEMPLATES, VOCABULARIES, caption_for

    sampler = Sampler.load(DEMO_GENERATOR)
    assert sampler.knows_only_shapes and sampler.vocabulary == VOCABULARIES
    examples = sampler.example_prompts()
    assert len(examples) == len(CAPTION_TEMPLATES) and all(sampler.notices(p) == [] for p in examples)
    captions = [
        caption_for(dict(zip(VOCABULARIES, values)), t) for t in range(6) for values in zip(*VOCABULARIES.values())
    ]
    assert sampler.notices(captions) == []
    korean, emoji, white, grey, hexagon = sampler.notices(
        ["빨간 원", "🔴 ⭕", "a red circle on a white background", "a red circle on a grey background", "a red hexagon"]
    )
    assert "never read 빨간, 원" in korean and "may not understand" in korean
    assert "never read 🔴, ⭕" in emoji and "may not understand" in emoji
    assert white == (
        f"prompt 'a red circle on a white background': Shapes backgrounds are {' or '.join(BACKGROUNDS)}: "
        "there is no white background (white is a shape colour)"
    )
    assert "never read grey" in grey and "there is no grey background" in grey
    assert "never read hexagon" in hexagon and "may not understand" not in hexagon  # 2 of 3 words known
