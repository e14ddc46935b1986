"""Features of images for the metrics: the extractors (torch-fidelity's Inception, the evaluation
CLIP registered as a torch-fidelity extractor, the Shapes attribute classifier) and the cache of
reference-image features, one entry per (reference set, extractor).

Every extractor takes uint8 [N, 3, R, R], the form torch-fidelity's extractors take, so generated
and real images go through exactly the same quantisation.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.utils import create_feature_extractor

from lafite_core.assets import resolve_asset
from lafite_core.attribute_classifier import load_attribute_classifier
from lafite_core.data.shapes import VOCABULARIES
from lafite_core.encoders import file_sha256
from lafite_core.grids import from_uint8
from lafite_core.progress import tqdm

# feature name -> the extractor that provides it
FEATURES = {
    "inception_pool": "inception",  # torch-fidelity Inception-v3 pool3 (2048-d): FID, KID
    "inception_logits": "inception",  # its unbiased logits: IS
    "clip_image": "clip",  # the evaluation CLIP's image features: CLIP-FID/KID, CLIP score, R-precision
    "attributes": "attributes",  # the Shapes attribute classifier's predictions: caption accuracy
}


@dataclass
class FeatureExtractor:
    """uint8 images [N, 3, R, R] -> {feature name: [N, d] on the CPU}; `identity` says which
    network (and weights) made the features, so cached reference features are never mixed up."""

    identity: str
    fn: Callable[[Tensor], dict[str, Tensor]]

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        return self.fn(images)


class EncoderFeatures(FeatureExtractorBase):
    """torch-fidelity feature extractor over a CLIP image encoder: feature "clip", used for FID and
    KID in CLIP space. Input is torch-fidelity's uint8 [N, 3, H, W]; the encoder's own
    preprocessing (resize, normalisation) applies. torch-fidelity builds extractors from a class
    and a name, so each encoder gets its own subclass (register_encoder_extractor)."""

    bound_encoder = None  # the ClipEncoder, set on each registered subclass

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        self.encoder = type(self).bound_encoder

    @staticmethod
    def get_provided_features_list():
        return ("clip",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "clip"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: Tensor):
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images [N, 3, H, W], got {x.dtype} {tuple(x.shape)}")
        with torch.no_grad():
            return (self.encoder.encode_image(from_uint8(x)),)


_REGISTERED: dict[str, type] = {}


def encoder_fingerprint(encoder) -> str:
    """sha256 of the encoder's weights file, or of its parameters when it has none (random init)."""
    if encoder.weights_sha256:
        return encoder.weights_sha256
    digest = hashlib.sha256(encoder.name.encode())
    for tensor in encoder.model.state_dict().values():
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def register_encoder_extractor(encoder) -> str:
    """Register `encoder` (a ClipEncoder, any open_clip model) as a torch-fidelity
    feature extractor and return its name, usable as `feature_extractor=` in
    torch_fidelity.calculate_metrics (e.g. fid=True, kid=True). One name per set of weights."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in encoder.name)
    name = f"clip-{safe}-{encoder_fingerprint(encoder)[:12]}"
    if name not in _REGISTERED:
        cls = type(f"EncoderFeatures_{len(_REGISTERED)}", (EncoderFeatures,), {})
        register_feature_extractor(name, cls)
        _REGISTERED[name] = cls
    _REGISTERED[name].bound_encoder = encoder
    return name


def clip_extractor(encoder, device: torch.device) -> FeatureExtractor:
    """The evaluation CLIP as a torch-fidelity extractor (feature "clip_image")."""
    name = register_encoder_extractor(encoder)
    module = create_feature_extractor(name, ["clip"], cuda=False, verbose=False).to(device)
    return FeatureExtractor(name, lambda x: {"clip_image": module(x.to(device))[0].float().cpu()})


def inception_extractor(weights: str | None, device: torch.device) -> FeatureExtractor:
    """torch-fidelity's Inception-v3 (the TF-FID-compatible one): features "inception_pool" and
    "inception_logits". `weights` is a local copy of its weights file (parameter
    inception_weights); None lets torch-fidelity download it, which needs internet."""
    how_to = (
        f"Download {URL_INCEPTION_V3} on a connected machine and set parameter inception_weights "
        f"to the file, or drop fid, kid and is from parameter metrics"
    )
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"parameter inception_weights = {weights!r}: no such file. {how_to}")
        try:  # torch-fidelity loads it with weights_only=False: make sure it is a plain state dict first
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"parameter inception_weights = {weights!r} is not a plain PyTorch state dict "
                f"({type(err).__name__}: {err})"
            ) from None
        identity = f"inception-v3-compat:{file_sha256(path)}"
    else:
        identity = f"inception-v3-compat:{URL_INCEPTION_V3.rsplit('/', 1)[-1]}"
    try:
        module = create_feature_extractor(
            "inception-v3-compat",
            ["2048", "logits_unbiased"],
            cuda=False,
            feature_extractor_weights_path=weights,
            verbose=False,
        )
    except Exception as err:
        if weights is not None:
            raise ValueError(
                f"parameter inception_weights = {weights!r} does not fit torch-fidelity's "
                f"Inception-v3 ({type(err).__name__}: {err})"
            ) from None
        raise RuntimeError(
            f"torch-fidelity could not fetch its Inception weights (parameter inception_weights "
            f"is null; {type(err).__name__}: {err}). {how_to}."
        ) from None
    module = module.to(device)

    def fn(x: Tensor) -> dict[str, Tensor]:
        pool, logits = module(x.to(device))
        return {"inception_pool": pool.float().cpu(), "inception_logits": logits.float().cpu()}

    return FeatureExtractor(identity, fn)


def attribute_extractor(path: str, device: torch.device) -> FeatureExtractor:
    """The Shapes attribute classifier's predictions (feature "attributes", [N, k] value indices)."""
    resolved = resolve_asset(path)
    try:
        model = load_attribute_classifier(resolved, device)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"parameter attribute_classifier: {err}") from None
    if model.vocabularies != {k: tuple(v) for k, v in VOCABULARIES.items()}:
        raise ValueError(f"parameter attribute_classifier = {path!r} was trained on other Shapes vocabularies")
    return FeatureExtractor(
        f"attributes:{file_sha256(resolved)}", lambda x: {"attributes": model.predict(x.to(device)).cpu()}
    )


def extract(
    batches: Iterable[Tensor],
    extractors: Iterable[FeatureExtractor],
    total: int,
    desc: str = "images",
    progress: bool = True,
) -> dict[str, Tensor]:
    """Run every extractor on every uint8 batch; features concatenated per name."""
    extractors = list(extractors)
    parts: dict[str, list[Tensor]] = {}
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in batches:
            for extractor in extractors:
                for name, value in extractor(batch).items():
                    parts.setdefault(name, []).append(value)
            bar.update(len(batch))
    return {name: torch.cat(values) for name, values in parts.items()}


# ============================================================================ reference features
def reference_features(
    batches: Callable[[], Iterable[Tensor]],
    total: int,
    extractors: dict[str, FeatureExtractor],
    names: list[str],
    reference_id: dict,
    cache_dir: str | Path,
    progress: bool = True,
) -> dict[str, Tensor]:
    """Features of the reference images for each feature name, from the cache when present.

    A cache entry is one folder per (reference set, feature extractor): `reference_id`
    (dataset fingerprint, items, resolution) plus the extractor's identity, hashed. Missing
    entries are computed in one pass over the images (`batches()` is only called then) and
    written before returning."""
    cache_dir = Path(cache_dir)
    found, folders = {}, {}
    for name in names:
        extractor = extractors[FEATURES[name]]
        key = json.dumps({"reference": reference_id, "feature": name, "extractor": extractor.identity}, sort_keys=True)
        folders[name] = cache_dir / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        path = folders[name] / "features.npy"
        if path.is_file():
            found[name] = torch.from_numpy(np.load(path))
    missing = [n for n in names if n not in found]
    if missing:
        kinds = dict.fromkeys(FEATURES[n] for n in missing)
        computed = extract(batches(), [extractors[k] for k in kinds], total, "reference", progress)
        for name in missing:
            found[name] = computed[name]
            _save_reference(folders[name], computed[name], reference_id, extractors[FEATURES[name]].identity)
    return found


def _save_reference(folder: Path, features: Tensor, reference_id: dict, identity: str) -> None:
    """Write through a temporary file of this process's own: evaluations running side by side may
    compute the same entry, and each must only ever rename a file it finished writing."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".features.{os.getpid()}.tmp.npy"
    np.save(tmp, features.numpy())
    tmp.replace(folder / "features.npy")
    (folder / "meta.json").write_text(
        json.dumps({"reference": reference_id, "extractor": identity, "shape": list(features.shape)}, indent=2)
    )
