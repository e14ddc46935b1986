"""ClipEncoder: the tiny architecture, normalised features, gradients through the frozen CLIP,
long-caption splitting, caption errors, local weights files and the offline tag error."""

import hashlib
import re

import pytest
import torch
import torch.nn.functional as F

from lafite_core.config import EncoderConfig
from lafite_core.encoders import (
    _random_square_crop,
    check_text,
    encoder_device,
    list_encoders,
    load_encoder,
    register_model_config,
    text_notice,
)

LONG_CAPTION = ", ".join(["a small red triangle in the top left corner on a black background"] * 3) + "."


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_encoder(EncoderConfig(name="lafite-tiny", pretrained=None))


def images(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_tiny_is_registered_and_small(tiny):
    assert "lafite-tiny" in list_encoders()
    assert tiny.feature_dim == tiny.model.visual.output_dim == tiny.model.text_projection.shape[1] == 128
    assert tiny.image_size == 32
    assert tiny.tokenizer.context_length == 32  # the config's context length reaches the tokenizer
    n_params = sum(p.numel() for p in tiny.model.parameters())
    assert n_params * 4 <= 20e6, f"{n_params} fp32 parameters exceed 20 MB"
    assert tiny.identity() == {
        "name": "lafite-tiny",
        "pretrained": None,
        "weights_sha256": None,
        "feature_dim": 128,
        "image_size": 32,
    }


def test_features_are_unit_norm(tiny):
    text = tiny.encode_text(["a red circle", "a blue square on a white background"])
    image = tiny.encode_image(images(4, size=64))
    assert text.shape == (2, 128) and image.shape == (4, 128)
    assert text.dtype == image.dtype == torch.float32
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(4))


def test_encode_image_is_differentiable_wrt_images_only(tiny):
    x = images(2, size=48).requires_grad_(True)
    target = F.normalize(torch.randn(2, tiny.feature_dim), dim=-1)
    (tiny.encode_image(x) * target).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in tiny.parameters())


def test_encoder_stays_frozen_in_eval_mode(tiny):
    parent = torch.nn.ModuleDict({"clip": tiny})
    parent.train()
    assert not tiny.model.training
    assert all(not m.training for m in tiny.model.modules())


def test_preprocess_maps_range_and_size(tiny):
    grey = torch.zeros(1, 3, 64, 64)  # 0 in [-1, 1] is 0.5 in [0, 1]
    x = tiny.preprocess(grey)
    assert x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x, ((0.5 - tiny.mean) / tiny.std).expand_as(x))
    with pytest.raises(ValueError, match="expected images"):
        tiny.preprocess(torch.zeros(3, 32, 32))


def test_augment_crops_large_images_reproducibly(tiny):
    x = images(2, size=256).requires_grad_(True)
    a = tiny.encode_image(x, augment=True, generator=torch.Generator().manual_seed(1))
    b = tiny.encode_image(x, augment=True, generator=torch.Generator().manual_seed(1))
    plain = tiny.encode_image(x)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, plain)
    a.sum().backward()
    assert x.grad.abs().sum() > 0
    # small images are resized whole, augment or not
    small = images(2, size=64)
    torch.testing.assert_close(tiny.encode_image(small, augment=True), tiny.encode_image(small))


def test_random_square_crop_sides():
    x = torch.zeros(1, 3, 300, 256)
    g = torch.Generator().manual_seed(0)
    sides = set()
    for _ in range(50):
        crop = _random_square_crop(x, g)
        assert crop.shape[-1] == crop.shape[-2]
        sides.add(crop.shape[-1])
    assert min(sides) >= 128 and max(sides) < 256 and len(sides) > 10


def test_long_caption_is_split_and_averaged(tiny):
    assert len(tiny.tokenizer.encode(LONG_CAPTION)) + 2 > tiny.tokenizer.context_length
    pieces = [p.strip() for p in re.split(r"[.,]", LONG_CAPTION) if p.strip()]
    assert len(pieces) == 3
    piece_features = tiny.encode_text(pieces)
    expected = F.normalize(piece_features.mean(0, keepdim=True), dim=-1)
    got = tiny.encode_text(["a cat", LONG_CAPTION])
    torch.testing.assert_close(got[1:], expected)
    torch.testing.assert_close(got[:1], tiny.encode_text(["a cat"]))  # short captions untouched


def test_text_check_counts_tokens_and_words_without_a_whole_token(tiny):
    long = check_text(tiny.tokenizer, LONG_CAPTION)
    assert long.truncated and long.tokens == len(tiny.tokenizer.encode(LONG_CAPTION)) + 2 and long.context == 32
    assert f"caption 0 of x.txt has {long.tokens} tokens" in text_notice(long, "caption 0 of x.txt")
    fine = check_text(tiny.tokenizer, "a red star")
    assert not fine.truncated and not fine.mostly_unknown and text_notice(fine, "prompt") is None
    odd = check_text(tiny.tokenizer, "a qxzv glorpt star")
    assert odd.unknown_words == ("qxzv", "glorpt") and not odd.mostly_unknown  # 2 of 4 words: not most
    worse = check_text(tiny.tokenizer, "qxzv glorpt zzyzzx star")
    assert worse.mostly_unknown and "knows 1 of its 4 words" in text_notice(worse, "prompt 'q'")


def test_long_captions_encoded_are_reported_with_their_index(tiny):
    heard = []
    tiny.encode_text(["a cat", LONG_CAPTION], on_long=lambda i, check: heard.append((i, check.tokens)))
    assert [i for i, _ in heard] == [1] and heard[0][1] > tiny.tokenizer.context_length


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_bad_caption_names_its_index(tiny, bad):
    with pytest.raises(ValueError, match="caption 1 "):
        tiny.encode_text(["a cat", bad, "a dog"])


def test_local_weights_file_round_trip(tiny, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(path))
    torch.manual_seed(123)  # a different random init, overwritten by the file
    loaded = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(path)))
    x = images(2)
    torch.testing.assert_close(loaded.encode_image(x), tiny.encode_image(x))
    torch.testing.assert_close(loaded.encode_text(["a red circle"]), tiny.encode_text(["a red circle"]))
    identity = loaded.identity()
    assert identity["pretrained"] == str(path)
    assert identity["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    pt_path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), pt_path)
    from_pt = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(pt_path)))
    torch.testing.assert_close(from_pt.encode_image(x), tiny.encode_image(x))


def test_missing_file_and_unknown_tag_are_clear(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(missing)))
    with pytest.raises(ValueError, match="neither a known tag"):
        load_encoder(EncoderConfig(name="lafite-tiny", pretrained="laion2b"))
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-B-33'.*ViT-B-32"):
        load_encoder(EncoderConfig(name="ViT-B-33"))


def test_unfetchable_tag_offline_says_how_to_use_a_file(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # no cached copy
    with pytest.raises(RuntimeError, match="could not fetch pretrained weights 'openai'") as err:
        load_encoder(EncoderConfig(name="ViT-B-32", pretrained="openai"))
    assert "pretrained: /path/to/weights.safetensors" in str(err.value)


def test_vit_b_32_random_init_reports_its_size():
    enc = load_encoder(EncoderConfig(name="ViT-B-32", pretrained=None))
    assert enc.feature_dim == 512 and enc.image_size == 224


def test_register_config_dict_gives_new_feature_size():
    config = {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 16, "patch_size": 4, "layers": 1, "width": 64, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    assert register_model_config(config, name="lafite-test-64") == ["lafite-test-64"]
    enc = load_encoder(EncoderConfig(name="lafite-test-64"))
    assert enc.feature_dim == 64 and enc.image_size == 16
    assert enc.encode_text(["a red circle"]).shape == (1, 64)
    with pytest.raises(ValueError, match="lacks vision_cfg"):
        register_model_config({"embed_dim": 8, "text_cfg": {}}, name="broken")
    with pytest.raises(ValueError, match="needs a name"):
        register_model_config(config)


def test_bf16_precision_returns_float32_features():
    enc = load_encoder(EncoderConfig(name="lafite-tiny", precision="bf16"))
    assert enc.model.visual.conv1.weight.dtype == torch.bfloat16
    x = images(2).requires_grad_(True)
    features = enc.encode_image(x)
    assert features.dtype == torch.float32
    features.sum().backward()
    assert x.grad.abs().sum() > 0


def test_encoder_device_auto_follows_the_run_and_a_conflict_is_an_error():
    cpu, cuda1 = torch.device("cpu"), torch.device("cuda:1")
    assert encoder_device("auto", cpu) == cpu and encoder_device("auto", cuda1) == cuda1
    assert encoder_device("cuda", cuda1) == cuda1 and encoder_device("cpu", cpu) == cpu
    with pytest.raises(ValueError, match="device = 'cuda:0', but this run computes on cuda:1"):
        encoder_device("cuda:0", cuda1)
    with pytest.raises(ValueError, match="device = 'cpu', but this run computes on cuda:1; set it to 'auto'"):
        encoder_device("cpu", cuda1)
    assert encoder_device("cpu") == cpu  # no run: the option as given
    tiny = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=None, device="auto"), run_device="meta")
    assert tiny.device == torch.device("meta")  # "auto" put it on the run's device
