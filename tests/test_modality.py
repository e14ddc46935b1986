"""The modality geometry: measured from a real cache of the shipped encoder, written by the command
line, read back unchanged, and the shipped file agrees with its note."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lafite_core import measure_modality, modality
from lafite_core.assets import ASSETS_DIR
from lafite_core.config import tiny_encoder
from lafite_core.data.cache import build_cache
from lafite_core.data.shapes import ShapesDataset
from lafite_core.encoders import load_encoder


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(tiny_encoder())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, encoder):
    folder = tmp_path_factory.mktemp("geometry") / "cache"
    build_cache(
        ShapesDataset(resolution=32, size=24, seed=0, split="train"),
        encoder,
        folder,
        batch_size=12,
        shard_size=12,
        progress=False,
    )
    return folder


def test_cache_geometry_is_the_mean_of_its_pairs(cache_dir):
    from lafite_core.data.cache import load_cache

    cache = load_cache(cache_dir)
    images = F.normalize(torch.tensor(np.array(cache.image_features, dtype=np.float32)), dim=-1)
    captions = F.normalize(torch.tensor(np.array(cache.caption_features, dtype=np.float32)), dim=-1)
    owners = torch.tensor(np.array(cache.caption_item))
    geometry = measure_modality.measure_cache(cache_dir)
    assert geometry.matched_cosine == pytest.approx(float((images[owners] * captions).sum(-1).mean()), abs=1e-5)
    torch.testing.assert_close(geometry.text_mean, captions.mean(0))
    assert geometry.gap == pytest.approx(float((images.mean(0) - captions.mean(0)).norm()), abs=1e-5)
    assert geometry.details["pairs"] == len(captions) and geometry.details["text_source"] == "the cache's captions"


def test_command_line_with_a_text_file_round_trips(tmp_path, cache_dir, encoder):
    texts = ["a red circle", "a blue square on a gray background", "a small green star in the center"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n\n")
    out = tmp_path / "g.safetensors"
    with pytest.raises(SystemExit) as done:
        measure_modality.run_main(
            lambda: measure_modality.main(
                ["--cache", str(cache_dir), "--texts", str(tmp_path / "texts.txt"), "--out", str(out)]
            )
        )
    assert done.value.code == 0
    loaded = modality.load_geometry(out)
    torch.testing.assert_close(loaded.text_mean, F.normalize(encoder.encode_text(texts), dim=-1).mean(0))
    assert loaded.matched_cosine == pytest.approx(measure_modality.measure_cache(cache_dir).matched_cosine)
    assert loaded.details["texts"] == 3


def test_empty_text_file_and_wrong_file_are_named(tmp_path, cache_dir):
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty.txt holds no text"):
        measure_modality.encode_text_file(cache_dir, tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="parameter perturbation.geometry: .* is not a lafite-modality"):
        modality.load_geometry(_other_safetensors(tmp_path))


def _other_safetensors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata={"format": "something-else"})
    return path


@pytest.mark.parametrize(
    "stem, figures",
    [("lafite-tiny-shapes", (0.529, 0.852, 0.824)), ("lafite-tiny-shapes-cliplike", (0.274, 1.004, 0.761))],
)
def test_shipped_geometry_matches_its_note(stem, figures):
    geometry = modality.load_geometry(ASSETS_DIR / f"{stem}.geometry.safetensors")
    assert (
        round(geometry.matched_cosine, 3),
        round(geometry.gap, 3),
        round(geometry.centred_matched_cosine, 3),
    ) == figures
    assert geometry.details["texts"] == 2160 and geometry.details["text_source"] == "a text file"
