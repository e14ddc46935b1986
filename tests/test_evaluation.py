"""Generate-and-score (lafite_core/evaluation.py): CLIP-space FID through torch-fidelity, the
reference cache, the Inception weights error, caption accuracy and CLIP score of real images,
and one end-to-end evaluation of a tiny generator with its baselines and results table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lafite_core.assets import TINY_ENCODER_WEIGHTS
from lafite_core.checkpoint import module_state, save_checkpoint, to_json_string
from lafite_core.config import (
    DataConfig,
    EncoderConfig,
    EvalConfig,
    NetworkConfig,
    ProtocolConfig,
    from_dict,
    protocol_preset,
    to_dict,
)
from lafite_core.data.shapes import ShapesDataset
from lafite_core.encoders import load_encoder
from lafite_core.evaluation import dataset_batches, encode_prompts, evaluate, load_eval_config, plan_prompts
from lafite_core.features import (
    FeatureExtractor,
    attribute_extractor,
    clip_extractor,
    extract,
    inception_extractor,
    reference_features,
    register_encoder_extractor,
)
from lafite_core.metrics import (
    ScoredImages,
    caption_accuracy,
    clip_score,
    compute_metrics,
    frechet_distance,
    read_table,
)
from lafite_core.params import load_params

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder():
    """The shipped tiny encoder (CLIP score needs a trained one)."""
    return load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(TINY_ENCODER_WEIGHTS)))


@pytest.fixture(scope="module")
def shapes_images():
    ds = ShapesDataset(resolution=32, size=64, seed=0, split="test")
    return ds, torch.cat(list(dataset_batches(ds, list(range(64)), 32, CPU)))


def _blend_to_grey(images: torch.Tensor, t: float) -> torch.Tensor:
    return ((1 - t) * images.float() + t * 128.0).round().to(torch.uint8)


def test_clip_fid_is_zero_for_a_set_against_itself_and_grows_with_a_shift(encoder, shapes_images):
    _, images = shapes_images
    extractor = clip_extractor(encoder, CPU)
    features = extract([images], [extractor], len(images), progress=False)["clip_image"]
    assert features.shape == (64, encoder.feature_dim)
    itself = abs(frechet_distance(features, features))
    assert itself < 1e-4
    shifted = [frechet_distance(features, extractor(_blend_to_grey(images, t))["clip_image"]) for t in (0.1, 0.3, 0.6)]
    # the trained encoder barely minds a 10% blend (7e-4), so "grows" is measured against the self-distance
    assert shifted[0] > max(1e-5, 10 * itself) and shifted[0] < shifted[1] < shifted[2]


def test_encoder_extractor_plugs_into_torch_fidelity_calculate_metrics(encoder, shapes_images):
    import torch_fidelity

    _, images = shapes_images

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    name = register_encoder_extractor(encoder)
    assert register_encoder_extractor(encoder) == name  # one registration per set of weights
    a, b = images[:32], _blend_to_grey(images[32:], 0.3)
    out = torch_fidelity.calculate_metrics(
        input1=Images(a),
        input2=Images(b),
        fid=True,
        feature_extractor=name,
        cuda=False,
        save_cpu_ram=True,
        cache=False,
        verbose=False,
    )
    ours = clip_extractor(encoder, CPU)
    expected = frechet_distance(ours(a)["clip_image"], ours(b)["clip_image"])
    assert out["frechet_inception_distance"] == pytest.approx(expected, rel=1e-3)


def test_reference_features_are_cached_per_reference_set_and_extractor(tmp_path):
    calls = {"batches": 0, "images": 0}

    def batches():
        calls["batches"] += 1
        yield torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
        yield torch.ones(2, 3, 32, 32, dtype=torch.uint8)

    def count(x):
        calls["images"] += len(x)
        return {"clip_image": x.float().mean(dim=(2, 3))}

    extractors = {"clip": FeatureExtractor("counting-v1", count)}
    ref_id = {"dataset": "abc", "items": [0, 6], "resolution": 32}
    first = reference_features(batches, 6, extractors, ["clip_image"], ref_id, tmp_path, progress=False)
    again = reference_features(batches, 6, extractors, ["clip_image"], ref_id, tmp_path, progress=False)
    assert calls == {"batches": 1, "images": 6} and torch.equal(first["clip_image"], again["clip_image"])
    assert first["clip_image"].shape == (6, 3)
    # another extractor (other weights) or another reference set is computed afresh
    extractors["clip"] = FeatureExtractor("counting-v2", count)
    reference_features(batches, 6, extractors, ["clip_image"], ref_id, tmp_path, progress=False)
    reference_features(batches, 6, extractors, ["clip_image"], {**ref_id, "dataset": "xyz"}, tmp_path, progress=False)
    assert calls == {"batches": 3, "images": 18}
    assert len(list(tmp_path.glob("clip_image-*/features.npy"))) == 3


def test_missing_inception_weights_give_an_error_naming_the_parameter(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="parameter inception_weights = .*no such file"):
        inception_extractor(str(tmp_path / "pt_inception.pth"), CPU)
    # offline: torch-fidelity's own download fails (made deterministic with an unreachable address)
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached weights
    monkeypatch.setattr(inception_module, "URL_INCEPTION_V3", "http://127.0.0.1:9/weights-inception.pth")
    with pytest.raises(RuntimeError, match="parameter inception_weights is null.*set parameter inception_weights"):
        inception_extractor(None, CPU)


@pytest.mark.slow
def test_a_local_inception_weights_file_feeds_the_inception_metrics(tmp_path, monkeypatch, shapes_images):
    """The local-file route, with a randomly initialised Inception (its numbers mean nothing; the
    real weights are not on this machine): features have Inception's sizes and the metrics run."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    with monkeypatch.context() as patch:  # build one without any weights, to write a file
        patch.setattr(inception_module, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(inception_module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        torch.manual_seed(0)
        random_inception = inception_module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "random-inception.pth"
    torch.save(random_inception.state_dict(), path)
    extractor = inception_extractor(str(path), CPU)
    assert extractor.identity.startswith("inception-v3-compat:") and len(extractor.identity) > 40
    _, images = shapes_images
    features = extractor(images[:4])
    assert features["inception_pool"].shape == (4, 2048) and features["inception_logits"].shape == (4, 1008)
    assert torch.isfinite(features["inception_pool"]).all()
    scored = ScoredImages(features=features)
    protocol = ProtocolConfig(num_samples=4, reference_size=4, kid_subset_size=2, kid_subsets=3, isc_splits=2)
    values = compute_metrics(["kid", "is"], scored, {"inception_pool": features["inception_pool"]}, protocol)
    assert values["is"] > 1.0 - 1e-6 and values["kid"] == values["kid"] and values["kid_std"] >= 0  # computed, not NaN
    bad = tmp_path / "not-a-state-dict.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="parameter inception_weights = .* is not a plain PyTorch state dict"):
        inception_extractor(str(bad), CPU)


def test_caption_accuracy_of_real_images_is_at_least_98_percent(shapes_images):
    ds, images = shapes_images
    prompts = plan_prompts(ds, list(range(64)), 192)  # three cycles: caption templates 0, 1 and 2
    assert prompts.captions[64] == ds[0].captions[1] and prompts.items[64] == 0
    assert (prompts.targets[64:128, 2] == -1).all()  # template 1 ("red star, top left") names no size
    judge = attribute_extractor("lafite_core/assets/attribute-classifier.safetensors", CPU)
    predicted = judge(images)["attributes"].repeat(3, 1)
    out = caption_accuracy(predicted, prompts.targets, ("shape", "colour", "size", "position", "background"))
    assert out["caption_accuracy"] >= 0.98 and out["acc_shape"] >= 0.98


def test_clip_score_of_real_images_with_their_captions_beats_shuffled_captions(encoder, shapes_images):
    ds, images = shapes_images
    prompts = plan_prompts(ds, list(range(64)), 64)
    ids, text = encode_prompts(encoder, prompts.captions)
    image_features = clip_extractor(encoder, CPU)(images)["clip_image"]
    matched = clip_score(image_features, text[ids])
    shuffled = clip_score(image_features, text[ids[torch.randperm(64, generator=torch.Generator().manual_seed(0))]])
    assert matched > shuffled + 2


# ----------------------------------------------------------------------------------- end to end
def _tiny_run(folder: Path, encoder) -> Path:
    network = NetworkConfig(
        resolution=32,
        z_dim=16,
        w_dim=16,
        mapping_layers=1,
        channel_base=256,
        channel_max=16,
        feature_dim=encoder.feature_dim,
    )
    from lafite_core.networks import Generator

    torch.manual_seed(0)
    G = Generator(network, encoder.feature_dim)
    state = {
        "config": to_json_string({"network": dataclasses.asdict(network)}),
        "encoder_identity": to_json_string(encoder.identity()),
        "G_ema": module_state(G),
        "step": 3,
        "nimg": 1500,
    }
    save_checkpoint(state, folder / "checkpoints", 1500)
    return folder


@pytest.mark.slow
def test_evaluate_writes_rows_with_the_protocol_for_model_and_baselines(tmp_path, encoder):
    run = _tiny_run(tmp_path / "run", encoder)
    protocol = ProtocolConfig(
        name="test",
        num_samples=32,
        batch_size=16,
        reference_size=32,
        kid_subsets=5,
        kid_subset_size=16,
        r_precision_candidates=10,
        isc_splits=2,
    )
    cfg = EvalConfig(
        checkpoint=str(run),
        data=DataConfig(kind="shapes", resolution=32, size=64, split="test"),
        protocol=protocol,
        eval_encoder=EncoderConfig(name="lafite-tiny", pretrained=encoder.pretrained),
        stats_cache=str(tmp_path / "stats"),
        results_dir=str(tmp_path / "results"),
        output_dir=str(tmp_path / "out"),
        table="tiny",
        device="cpu",
    )
    torch.manual_seed(0)  # the same global random state both times
    rows = evaluate(cfg, progress=False, encoder=encoder)
    assert [(r["eval_split"], r["subject"]) for r in rows] == [
        (s, subject) for s in ("test", "heldout") for subject in ("model", "shuffled conditions", "real images")
    ]
    for row in rows:
        assert row["num_samples"] == 32 and row["protocol"] == "test" and row["seed"] == 0
        assert row["kimg"] == 1.5 and row["checkpoint"].endswith("checkpoint-0000001500.pt")
        assert row["eval_clip"].startswith("lafite-tiny:") and row["attribute_classifier"]
        for key in ("clip_fid", "clip_kid", "clip_score", "r_precision", "caption_accuracy", "acc_colour"):
            assert isinstance(row[key], float), key
    by = {(r["eval_split"], r["subject"]): r for r in rows}
    for split in ("test", "heldout"):
        real, model = by[(split, "real images")], by[(split, "model")]
        assert real["caption_accuracy"] >= 0.9 and model["caption_accuracy"] < 0.5  # untrained G
        assert real["clip_fid"] < model["clip_fid"]
        assert real["num_images"] == 32  # images 32..63 of the split, outside the reference
    table = read_table("tiny", tmp_path / "results")
    assert len(table) == 6 and (tmp_path / "results" / "tiny.md").is_file()
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["heldout/caption_accuracy"] == by[("heldout", "model")]["caption_accuracy"]
    assert (tmp_path / "out" / "samples-heldout.png").is_file()

    cached = sorted(p.stat().st_mtime_ns for p in (tmp_path / "stats").glob("*/features.npy"))
    assert len(cached) == 2  # clip_image features of each split's reference images
    torch.manual_seed(0)
    again = evaluate(dataclasses.replace(cfg, baselines=[]), progress=False, encoder=encoder)
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "stats").glob("*/features.npy")) == cached
    assert [r["clip_fid"] for r in again] == [by[(s, "model")]["clip_fid"] for s in ("test", "heldout")]
    assert len(read_table("tiny", tmp_path / "results")) == 8


def test_bad_choices_fail_before_any_image_is_made(tmp_path, encoder):
    run = _tiny_run(tmp_path / "run", encoder)
    base = dict(checkpoint=str(run), device="cpu", stats_cache=str(tmp_path / "s"))
    with pytest.raises(KeyError, match="unknown metric 'fidd'"):
        evaluate(EvalConfig(metrics=["fidd"], **base), progress=False, encoder=encoder)
    with pytest.raises(FileNotFoundError, match="parameter checkpoint = .*holds no checkpoint"):
        evaluate(EvalConfig(**{**base, "checkpoint": str(tmp_path)}), progress=False, encoder=encoder)
    with pytest.raises(FileNotFoundError, match="parameter eval_encoder: CLIP weights file not found: nowhere/x"):
        evaluate(
            EvalConfig(eval_encoder=EncoderConfig(pretrained="nowhere/x.safetensors"), **base),
            progress=False,
            encoder=encoder,
        )
    with pytest.raises(ValueError, match="parameter eval_encoder: device = 'cuda', but this run computes on cpu"):
        evaluate(EvalConfig(eval_encoder=EncoderConfig(device="cuda"), **base), progress=False, encoder=encoder)
    with pytest.raises(ValueError, match="parameter heldout_split = 'val': shapes split must be"):
        evaluate(EvalConfig(heldout_split="val", metrics=["caption_accuracy"], **base), progress=False, encoder=encoder)
    data = DataConfig(kind="fashion_mnist", resolution=32, split="test")
    with pytest.raises(ValueError, match="caption_accuracy reads Shapes attributes"):
        evaluate(EvalConfig(data=data, **base), progress=False, encoder=encoder)
    with pytest.raises(ValueError, match="data.resolution = 64 differs from protocol.resolution = 32"):
        from_dict(EvalConfig, {"data": {"resolution": 64}})


# --------------------------------------------------------------------------- notebook and params
def test_paper_params_and_protocol_preset_by_name():

    paper = from_dict(EvalConfig, load_params(REPO / "params" / "evaluate_paper.yaml"))
    assert paper.protocol == protocol_preset("paper") and "fid" in paper.metrics and "is" in paper.metrics
    assert to_dict(paper)["data"]["resolution"] == 256
    by_name = load_eval_config(REPO / "params" / "evaluate.yaml", ["data.resolution=256"], protocol="paper")
    assert by_name.protocol == protocol_preset("paper") and by_name.data.kind == "shapes"
