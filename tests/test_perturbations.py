"""Pseudo text features: norms, the noise levels the paper's formulas predict, the official/paper
equivalence, shared noise, the learned net's training objective, weights files and the registry."""

import math

import pytest
import torch
import torch.nn.functional as F

from lafite_core.config import PerturbationConfig, from_dict
from lafite_core.modality import measure, noise_ratio, save_geometry
from lafite_core.perturbations import (
    PERTURBATIONS,
    GaussianPerturbation,
    LearnedPerturbation,
    OfficialPerturbation,
    build_perturbation,
    gaussian_perturb,
    interpolate_perturb,
    learned_perturbation_loss,
    save_learned_perturbation,
    train_learned_perturbation,
)

KINDS = ["none", "gaussian", "official", "learned"]
GEOMETRY_KINDS = ["calibrated", "centred"]  # need the encoder's modality geometry file


def features(n, d, seed=0, scale=3.0):
    """Random features with non-unit norms, as CLIP returns them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * scale


def mean_cos(a, b):
    return F.cosine_similarity(a, b, dim=-1).mean().item()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", ["image", "text"])
def test_outputs_are_unit_norm(kind, source):
    p = build_perturbation(PerturbationConfig(kind=kind), feature_dim=24)
    out = p(features(16, 24), source=source, generator=torch.Generator().manual_seed(0))
    assert out.shape == (16, 24)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(16))


def test_none_is_identity_after_normalising():
    h = features(8, 32)
    p = build_perturbation(PerturbationConfig(kind="none"), 32)
    torch.testing.assert_close(p(h, "image"), h / h.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(p(h, "text"), h / h.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("xi", [0.5, 1.0, 2.0, 3.0])
def test_gaussian_cosine_matches_theory(xi):
    h = features(4000, 512)
    p = build_perturbation(PerturbationConfig(kind="gaussian", xi=xi), 512)
    out = p(h, "image", generator=torch.Generator().manual_seed(1))
    assert abs(mean_cos(out, h) - 1 / math.sqrt(1 + xi**2)) < 0.02


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.75])
def test_official_equals_gaussian_with_xi_alpha_ratio(alpha):
    xi = alpha / (1 - alpha)
    h = F.normalize(features(2000, 512), dim=-1)
    eps = features(2000, 512, seed=5)
    # the same noise gives the same vector
    torch.testing.assert_close(interpolate_perturb(h, alpha, eps), gaussian_perturb(h, xi, eps))
    # and the modules agree, both exactly for one seed and in mean cosine for different seeds
    official = OfficialPerturbation(image_alpha=alpha)
    gaussian = GaussianPerturbation(xi=xi)
    a = official(h, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, gaussian(h, generator=torch.Generator().manual_seed(7)))
    b = gaussian(h, generator=torch.Generator().manual_seed(8))
    assert abs(mean_cos(a, h) - mean_cos(b, h)) < 0.02
    assert abs(mean_cos(a, h) - 1 / math.sqrt(1 + xi**2)) < 0.02


def test_official_defaults_reach_the_paper_noise_levels():
    h = features(2000, 512)
    p = build_perturbation(PerturbationConfig(kind="official"), 512)  # image 0.75, text 0.1
    assert abs(mean_cos(p(h, "image"), h) - 1 / math.sqrt(1 + 3.0**2)) < 0.02  # about 0.32
    assert abs(mean_cos(p(h, "text"), h) - 1 / math.sqrt(1 + (0.1 / 0.9) ** 2)) < 0.005  # about 0.99


@pytest.mark.parametrize("kind", ["gaussian", "official", "learned"])
def test_text_source_gets_the_small_interpolation(kind):
    h = features(2000, 512)
    p = build_perturbation(PerturbationConfig(kind=kind, text_alpha=0.3), 512)
    expected = 1 / math.sqrt(1 + (0.3 / 0.7) ** 2)
    assert abs(mean_cos(p(h, "text"), h) - expected) < 0.02
    off = build_perturbation(PerturbationConfig(kind=kind, text_alpha=0.0), 512)
    torch.testing.assert_close(off(h, "text"), F.normalize(h, dim=-1))


@pytest.mark.parametrize("kind", ["gaussian", "official", "learned"])
def test_every_sample_gets_its_own_noise(kind):
    same_input = features(1, 64).expand(6, -1)  # identical rows: outputs differ only by noise
    torch.manual_seed(0)
    p = build_perturbation(PerturbationConfig(kind=kind), 64)
    out = p(same_input, generator=torch.Generator().manual_seed(0))
    distances = (out[:, None] - out[None]).norm(dim=-1) + torch.eye(6)
    assert distances.min() > 1e-3


def test_shared_noise_is_not_a_parameter():
    with pytest.raises(ValueError, match="unknown parameter 'shared_noise'"):
        from_dict(PerturbationConfig, {"shared_noise": True})


def test_generator_makes_draws_reproducible():
    p = build_perturbation(PerturbationConfig(kind="gaussian"), 32)
    h = features(4, 32)
    torch.testing.assert_close(
        p(h, generator=torch.Generator().manual_seed(9)), p(h, generator=torch.Generator().manual_seed(9))
    )
    assert not torch.allclose(
        p(h, generator=torch.Generator().manual_seed(9)), p(h, generator=torch.Generator().manual_seed(10))
    )


def test_registry_lists_kinds_and_rejects_unknown():
    assert PERTURBATIONS.names() == sorted(KINDS + GEOMETRY_KINDS)
    with pytest.raises(KeyError) as err:
        build_perturbation(PerturbationConfig(kind="uniform"), 32)
    assert "uniform" in str(err.value) and all(k in str(err.value) for k in KINDS)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="image_alpha"):
        build_perturbation(PerturbationConfig(kind="official", image_alpha=1.5), 32)
    with pytest.raises(ValueError, match="xi"):
        build_perturbation(PerturbationConfig(kind="gaussian", xi=-1.0), 32)
    with pytest.raises(ValueError, match="source"):
        build_perturbation(PerturbationConfig(kind="none"), 32)(features(2, 32), source="caption")


def test_learned_net_has_the_official_shape():
    p = LearnedPerturbation(feature_dim=48, hidden_dim=1024)
    for head in (p.mu, p.log_std):
        linears = [m for m in head if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [
            (48, 1024),
            (1024, 1024),
            (1024, 1024),
            (1024, 48),
        ]


def synthetic_pairs(n=1024, d=32, seed=0):
    """Captions = image + a structured (linear) offset + noise: a gap the net can learn."""
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    offset = image @ (torch.randn(d, d, generator=g) / math.sqrt(d))
    text = F.normalize(image + 1.5 * offset + 0.9 * torch.randn(n, d, generator=g) / math.sqrt(d), dim=-1)
    return image, text


def evaluate(module, image, text):
    with torch.no_grad():
        return learned_perturbation_loss(module, image, text, generator=torch.Generator().manual_seed(0))[1]


@pytest.fixture
def one_thread():
    """The nets here are tiny; one thread avoids thread contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_learned_lowers_loss_and_moves_towards_captions(one_thread):
    image, text = synthetic_pairs()
    torch.manual_seed(0)
    module = LearnedPerturbation(32, hidden_dim=64)
    before = evaluate(module, image[:256], text[:256])
    history = train_learned_perturbation(module, image, text, steps=100, batch_size=64, lr=3e-3, progress=False)
    after = evaluate(module, image[:256], text[:256])
    assert len(history) == 100 and {"loss", "contrastive", "kl", "cos_text", "spread"} <= set(history[0])
    assert after["loss"] < before["loss"] - 0.5
    assert after["cos_text"] > before["cos_text"] + 0.15


def test_kl_term_keeps_the_noise_from_collapsing(one_thread):
    image, text = synthetic_pairs()
    spreads = {}
    for kl_weight in (0.0, 0.2):
        torch.manual_seed(0)
        module = LearnedPerturbation(32, hidden_dim=64)
        train_learned_perturbation(
            module, image, text, steps=100, batch_size=64, lr=3e-3, kl_weight=kl_weight, progress=False
        )
        spreads[kl_weight] = evaluate(module, image[:256], text[:256])["spread"]
    assert spreads[0.2] > 0.03
    assert spreads[0.0] < spreads[0.2] / 3


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_learned_weights_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    module = LearnedPerturbation(16, hidden_dim=32)
    path = tmp_path / f"perturb{suffix}"
    if suffix == ".safetensors":
        save_learned_perturbation(module, path)
    else:
        torch.save(module.state_dict(), path)
    loaded = build_perturbation(PerturbationConfig(kind="learned", learned_weights=str(path)), 16)
    assert loaded.hidden_dim == 32
    assert all(not p.requires_grad for p in loaded.parameters())
    h = features(5, 16)
    torch.testing.assert_close(
        loaded(h, generator=torch.Generator().manual_seed(1)), module(h, generator=torch.Generator().manual_seed(1))
    )
    with pytest.raises(ValueError, match="16-d features; the encoder gives 24-d"):
        build_perturbation(PerturbationConfig(kind="learned", learned_weights=str(path)), 24)


def test_missing_learned_weights_file_is_named(tmp_path):
    missing = tmp_path / "no_such_weights.safetensors"
    with pytest.raises(FileNotFoundError, match="no_such_weights.safetensors"):
        build_perturbation(PerturbationConfig(kind="learned", learned_weights=str(missing)), 16)


# ------------------------------------------------------------------ calibrated and centred
def geometry_file(tmp_path, d=64, offset=5.0):
    """A geometry whose image and text features differ by a constant offset plus small noise."""
    g = torch.Generator().manual_seed(3)
    content = torch.randn(400, d, generator=g)
    shift = torch.zeros(d)
    shift[0] = offset
    images = content + shift + 0.3 * torch.randn(400, d, generator=g)
    texts = content - shift + 0.3 * torch.randn(400, d, generator=g)
    geometry = measure(images, images, texts, texts)
    return save_geometry(geometry, tmp_path / "geometry.safetensors"), geometry, images, texts


@pytest.mark.parametrize("cosine", [0.3, 0.53, 0.8])
def test_calibrated_noise_keeps_the_target_cosine(cosine):
    d = 512
    p = build_perturbation(PerturbationConfig(kind="calibrated", target_cosine=cosine, geometry=None), d)
    assert p.xi == pytest.approx(math.sqrt(1 / cosine**2 - 1))
    h = features(2000, d)
    assert mean_cos(p(h, generator=torch.Generator().manual_seed(1)), h) == pytest.approx(cosine, abs=0.02)


def test_official_alpha_is_the_calibration_rule_at_clip_cosine():
    assert noise_ratio(0.316) / (1 + noise_ratio(0.316)) == pytest.approx(0.75, abs=0.002)


def test_calibrated_reads_the_matched_cosine_from_the_geometry(tmp_path):
    path, geometry, images, texts = geometry_file(tmp_path)
    p = build_perturbation(PerturbationConfig(kind="calibrated", geometry=str(path)), 64)
    assert p.xi == pytest.approx(noise_ratio(geometry.matched_cosine))
    assert geometry.matched_cosine == pytest.approx(mean_cos(images, texts), abs=1e-5)


def test_centred_moves_image_features_to_their_captions(tmp_path):
    path, geometry, images, texts = geometry_file(tmp_path)
    assert geometry.centred_matched_cosine > geometry.matched_cosine + 0.2  # the offset was most of the gap
    cfg = PerturbationConfig(kind="centred", geometry=str(path))
    noiseless = build_perturbation(PerturbationConfig(kind="centred", geometry=str(path), target_cosine=1.0), 64)
    assert mean_cos(noiseless(images), texts) == pytest.approx(geometry.centred_matched_cosine, abs=1e-5)
    noisy = build_perturbation(cfg, 64)
    out = noisy(images, generator=torch.Generator().manual_seed(0))
    assert mean_cos(out, noiseless(images)) == pytest.approx(geometry.centred_matched_cosine, abs=0.03)
    assert mean_cos(out, texts) > mean_cos(images, texts)


def test_geometry_kinds_name_a_missing_or_mismatched_file(tmp_path):
    with pytest.raises(ValueError, match="perturbation.geometry"):
        build_perturbation(PerturbationConfig(kind="centred", geometry=None), 64)
    with pytest.raises(FileNotFoundError, match="perturbation.geometry.*nowhere"):
        build_perturbation(PerturbationConfig(kind="calibrated", geometry=str(tmp_path / "nowhere")), 64)
    path = geometry_file(tmp_path)[0]
    with pytest.raises(ValueError, match="64-d"):
        build_perturbation(PerturbationConfig(kind="centred", geometry=str(path)), 32)
    (tmp_path / "other.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        build_perturbation(PerturbationConfig(kind="centred", geometry=str(tmp_path / "other.safetensors")), 64)


def test_a_range_of_target_cosines_spreads_the_noise_levels_over_it():
    h = F.normalize(torch.randn(4000, 512), dim=-1)
    cfg = PerturbationConfig(kind="calibrated", target_cosine=0.9, min_target_cosine=0.3)
    g = torch.Generator().manual_seed(0)
    cosines = (build_perturbation(cfg, 512)(h, generator=g) * h).sum(-1)
    assert cosines.min() < 0.35 and cosines.max() > 0.85  # both ends of the range are drawn
    assert cosines.mean().item() == pytest.approx(0.6, abs=0.03)  # uniform between 0.3 and 0.9
    assert ((cosines > 0.4) & (cosines < 0.8)).float().mean().item() == pytest.approx(4 / 6, abs=0.05)
    with pytest.raises(ValueError, match="min_target_cosine"):
        build_perturbation(PerturbationConfig(kind="calibrated", target_cosine=0.5, min_target_cosine=0.6), 512)
