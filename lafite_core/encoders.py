"""The frozen CLIP that LAFITE conditions on, loaded through open_clip.

Any open_clip architecture works by name (`list_encoders()`); its weights come from a pretrained
tag (downloaded by open_clip on a connected machine), a local weights file (works offline), or
nowhere (random init, for tests). The kit's own tiny architecture, "lafite-tiny", lives in
`lafite_core/model_configs/` and is registered on import: a 32 px ViT (patch 8, width 128, 4
layers) and a text transformer (width 64, 4 layers, context 32) meeting in a 128-d space, 4.2 M
parameters (16.8 MB in fp32). Patch 8 (a 4 x 4 grid) because a patch-4 tower trained from scratch
does not separate the four corners in a short run, and costs twice as much per step. Text width is
64 because open_clip's tokenizer keeps its 49408-token vocabulary, and the token table costs
vocab * width parameters.

`ClipEncoder` gives the two views LAFITE needs:
- `encode_text(captions)`: caption features for conditioning and evaluation (no grad);
- `encode_image(images)`: features of images in the generator's [-1, 1] range, differentiable with
  respect to the images, because L_ConG back-propagates through the frozen CLIP into G.
Both return L2-normalised float32 features of size `feature_dim`, read from the model.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import pickle
import re
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor

from lafite_core.assets import resolve_asset
from lafite_core.config import EncoderConfig
from lafite_core.precision import resolve_device
from lafite_core.tensor_files import judge_weights_file, refusal_reason

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"

# The official code crops generated images only when they are at least this large (CLIP's usual
# input size); smaller images are shown whole.
CROP_MIN_SIZE = 224
CROP_MIN_FRACTION = 0.5

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_REQUIRED_CONFIG_KEYS = ("embed_dim", "vision_cfg", "text_cfg")


class ClipEncoder(torch.nn.Module):
    """A frozen open_clip model with LAFITE's image preprocessing and caption handling."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        name: str,
        pretrained: str | None,
        weights_sha256: str | None,
        precision: str = "fp32",
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.weights_sha256 = weights_sha256
        self.dtype = _DTYPES[precision]
        self.model.requires_grad_(False)
        self.model.eval()

        preprocess = open_clip.get_model_preprocess_cfg(model)
        self.image_size = _square_size(preprocess.get("size", getattr(model.visual, "image_size", None)), name)
        mean = preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = preprocess.get("std", open_clip.OPENAI_DATASET_STD)
        device = next(model.parameters()).device
        self.register_buffer("mean", torch.tensor(mean, device=device).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, device=device).view(1, 3, 1, 1), persistent=False)
        self.feature_dim = _feature_dim(model, self.image_size, self.dtype)

    def train(self, mode: bool = True) -> "ClipEncoder":
        """CLIP stays in eval mode even when a parent module is put into training mode."""
        super().train(mode)
        self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.mean.device

    # ----------------------------------------------------------------------------------- text
    @torch.no_grad()
    def encode_text(self, captions: list[str], on_long: Callable[[int, "TextCheck"], None] | None = None) -> Tensor:
        """Caption features [N, f]. Captions longer than the context are split on "." and ","
        and their pieces' features averaged, as the official dataset tool does; `on_long(i, check)`
        hears of each such caption (the embedding reports them). All captions go through CLIP as
        one batch: pass large lists in chunks."""
        if isinstance(captions, str):
            raise TypeError("encode_text takes a list of captions, got one str; wrap it: [caption]")
        captions = list(captions)
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"caption {i} is empty or not a string: {caption!r}")
        pieces, owner = [], []
        for i, caption in enumerate(captions):
            check = check_text(self.tokenizer, caption)
            if check is not None and check.truncated and on_long is not None:
                on_long(i, check)
            for piece in _split_if_too_long(caption, check):
                pieces.append(piece)
                owner.append(i)
        tokens = self.tokenizer(pieces).to(self.device)
        features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        owner_index = torch.tensor(owner, device=self.device)
        summed = torch.zeros(len(captions), features.shape[1], device=self.device)
        summed.index_add_(0, owner_index, features)
        return F.normalize(summed, dim=-1)  # mean of the pieces, up to a scale that normalising removes

    # ---------------------------------------------------------------------------------- image
    def encode_image(self, images: Tensor, augment: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Image features [N, f] of images in [-1, 1], [N, 3 (or 1), H, W], differentiable w.r.t. images.

        augment=True applies the authors' training-time view for images of at least CROP_MIN_SIZE
        px: one random square crop (side U[0.5, 1) of the image, shared by the batch) resized
        bicubic to CLIP's input (antialiased when it shrinks, which theirs is not). Smaller images
        are resized up whole. (The authors' code instead pastes them at a random offset into a
        224 px white canvas, LossConfig.clip_view = "official"; that shows CLIP a view unlike the
        one stored for real images, so the default resizes.)
        """
        x = self.preprocess(images, augment=augment, generator=generator)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    def preprocess(self, images: Tensor, augment: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """[-1, 1] images -> CLIP's normalised input (differentiable: crop, bicubic resize, affine)."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images [N, 3, H, W] (or 1 channel), got shape {tuple(images.shape)}")
        x = images.float().to(self.device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x + 1) / 2
        if augment and min(x.shape[-2:]) >= CROP_MIN_SIZE:
            x = _random_square_crop(x, generator)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            # antialias matters when shrinking (PIL does it for real images) and is differentiable
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True
            )
        return ((x - self.mean) / self.std).to(self.dtype)

    # ------------------------------------------------------------------------------- identity
    def identity(self) -> dict:
        """What caches and checkpoints store to check that features came from this same CLIP."""
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "weights_sha256": self.weights_sha256,
            "feature_dim": self.feature_dim,
            "image_size": self.image_size,
        }


# ---------------------------------------------------------------------------------------- text checks
@dataclass(frozen=True)
class TextCheck:
    """What the encoder makes of one text: its length against the context, the parts it is read
    as and the words cut from them, and the words it does not know. With a closed vocabulary (an
    encoder trained on a known set of captions) a word outside it is unknown; otherwise a word is
    unknown when the tokenizer has no whole token for it (a BPE vocabulary splits a word it never
    saw into pieces)."""

    text: str
    tokens: int  # start and end tokens included
    context: int
    words: int
    unknown_words: tuple[str, ...]
    closed_vocabulary: bool = False
    parts: int = 1  # the pieces a text longer than the context is read as
    cut: tuple[str, ...] = ()  # per piece still too long, its words past the context

    @property
    def truncated(self) -> bool:
        return self.tokens > self.context

    @property
    def mostly_unknown(self) -> bool:
        return self.words > 0 and 2 * len(self.unknown_words) > self.words

    @property
    def unknown_worth_saying(self) -> bool:
        """Any word outside a closed vocabulary (the encoder never read it), else most words."""
        return bool(self.unknown_words) if self.closed_vocabulary else self.mostly_unknown


def check_text(tokenizer: Any, text: str, vocabulary: frozenset[str] | None = None) -> TextCheck | None:
    """The check of `text`, against `vocabulary` when the encoder's is closed; None for tokenizers
    that cannot count tokens (Hugging Face ones)."""
    if not hasattr(tokenizer, "encode"):
        return None
    words = _words(text)
    if vocabulary is not None:
        unknown = tuple(w for w in words if w not in vocabulary)
    else:
        known = getattr(tokenizer, "encoder", {})
        unknown = tuple(w for w in words if known and _whole_token(tokenizer, w) not in known)
    tokens, context = len(tokenizer.encode(text)) + 2, tokenizer.context_length
    parts = _pieces(text) if tokens > context else [text]
    cut = tuple(c for piece in parts if (c := _cut_words(tokenizer, piece, context)))
    return TextCheck(text, tokens, context, len(words), unknown, vocabulary is not None, len(parts), cut)


def text_notice(check: TextCheck | None, what: str) -> str | None:
    """One line for a person about a prompt or caption (`what` names it), or None if all is well.
    A long text's line says what was cut, not the whole text."""
    if check is None:
        return None
    notes = []
    if check.truncated:
        if check.parts > 1:
            read = f"it is split on '.' and ',' into {check.parts} parts, their features averaged"
        else:
            read = "it is cut at the context"
        cut = "; ".join(f"'{c}'" for c in check.cut) or "nothing"
        notes.append(
            f"{what} has {check.tokens} tokens, more than the encoder's context of {check.context}: {read}; cut: {cut}"
        )
    if check.unknown_worth_saying:
        named = ", ".join(check.unknown_words[:5]) + (", ..." if len(check.unknown_words) > 5 else "")
        known = check.words - len(check.unknown_words)
        if check.closed_vocabulary:
            notes.append(
                f"{what}: the encoder never read {named} in training ({known} of its {check.words} words are "
                f"in its vocabulary)" + ("; it may not understand the prompt" if check.mostly_unknown else "")
            )
        else:
            notes.append(
                f"{what}: the tokenizer knows {known} of its {check.words} words as whole tokens "
                f"(unknown: {named}); the encoder may not understand it"
            )
    return "; ".join(notes) or None


def _words(text: str) -> list[str]:
    """Lower-case words in any script, and runs of symbols such as emoji; punctuation is no word."""
    return [w for w in re.findall(r"[^\W_]+|[^\w\s]+", text.lower()) if w.strip(string.punctuation)]


def _whole_token(tokenizer: Any, word: str) -> str:
    """`word` as a BPE vocabulary spells a whole-word token (bytes mapped to its characters)."""
    byte_encoder = getattr(tokenizer, "byte_encoder", None)
    spelled = "".join(byte_encoder[b] for b in word.encode()) if byte_encoder else word
    return spelled + "</w>"


def _pieces(text: str) -> list[str]:
    """A long text's non-empty "."/","-separated pieces (itself if it has none)."""
    return [p.strip() for p in re.split(r"[.,]", text) if p.strip()] or [text]


def _cut_words(tokenizer: Any, piece: str, context: int) -> str:
    """The words of `piece` past the context ("" if it fits): the tokenizer cuts them off."""
    words = piece.split()
    kept = 0
    while kept < len(words) and len(tokenizer.encode(" ".join(words[: kept + 1]))) + 2 <= context:
        kept += 1
    return " ".join(words[kept:])


def _split_if_too_long(caption: str, check: TextCheck | None) -> list[str]:
    """The caption itself if it fits the context, else its non-empty "."/","-separated pieces.
    Pieces that are still too long are truncated by the tokenizer. Tokenizers that cannot count
    tokens (Hugging Face ones) truncate the whole caption instead."""
    if check is None or not check.truncated:
        return [caption]
    return _pieces(caption)


def encoder_device(option: str, run_device: str | torch.device | None = None) -> torch.device:
    """Where an encoder goes. "auto": the run's compute device `run_device` (without a run: CUDA if
    available). An explicit device must be the run's, because the encoder's features meet the
    networks' tensors: a conflict is an error rather than a silent move."""
    if run_device is None:
        return resolve_device(option)
    run_device = torch.device(run_device)
    if option == "auto":
        return run_device
    wanted = torch.device(option)
    same_index = wanted.index is None or run_device.index is None or wanted.index == run_device.index
    if wanted.type != run_device.type or not same_index:
        raise ValueError(
            f"device = {option!r}, but this run computes on {run_device}; set it to 'auto' "
            f"(the run's device) or {str(run_device)!r}"
        )
    return run_device


def load_encoder(cfg: EncoderConfig, run_device: str | torch.device | None = None) -> ClipEncoder:
    """Build the frozen CLIP named by `cfg` in cfg.precision, on `encoder_device(cfg.device, run_device)`.
    `pretrained` may name a shipped file by its repository path (lafite_core/assets/...)."""
    if cfg.name not in open_clip.list_models():
        close = difflib.get_close_matches(cfg.name, open_clip.list_models(), n=5)
        raise ValueError(
            f"unknown CLIP model {cfg.name!r}; close matches: {close or 'none'} "
            f"(all: lafite_core.encoders.list_encoders())"
        )
    if cfg.precision not in _DTYPES:
        raise ValueError(f"unknown precision {cfg.precision!r}; known: {', '.join(_DTYPES)}")
    kwargs = dict(precision=cfg.precision, device=str(encoder_device(cfg.device, run_device)))
    pretrained, sha = resolve_asset(cfg.pretrained), None
    if pretrained is None:
        model = open_clip.create_model(cfg.name, pretrained=None, **kwargs)
    elif open_clip.get_pretrained_cfg(cfg.name, pretrained):
        model = _create_from_tag(cfg.name, pretrained, kwargs)
    elif Path(pretrained).is_file():
        model = _create_from_file(cfg.name, pretrained, kwargs)
        sha = file_sha256(pretrained)
    elif "/" in pretrained or "\\" in pretrained or pretrained.endswith(_WEIGHT_SUFFIXES):
        raise FileNotFoundError(f"CLIP weights file not found: {pretrained}")
    else:
        tags = open_clip.list_pretrained_tags_by_model(cfg.name)
        raise ValueError(
            f"pretrained={pretrained!r} is neither a known tag of {cfg.name} "
            f"(tags: {tags or 'none'}) nor an existing weights file"
        )
    tokenizer = open_clip.get_tokenizer(cfg.name)
    return ClipEncoder(model, tokenizer, cfg.name, pretrained, sha, cfg.precision)


def _create_from_tag(name: str, tag: str, kwargs: dict) -> torch.nn.Module:
    """Download (or reuse the cached) weights of a pretrained tag. Tags trained with QuickGELU
    (e.g. OpenAI's) get it even under the plain architecture name, so the features are right."""
    quick_gelu = open_clip.get_pretrained_cfg(name, tag).get("quick_gelu", False)
    try:
        return open_clip.create_model(name, pretrained=tag, force_quick_gelu=quick_gelu, **kwargs)
    except Exception as err:
        raise RuntimeError(
            f"could not fetch pretrained weights {tag!r} for CLIP {name!r} ({type(err).__name__}: {err}). "
            f"Without internet, download them on a connected machine and pass the local file instead: "
            f"`pretrained: /path/to/weights.safetensors` (an open_clip state dict)."
        ) from err


def _create_from_file(name: str, path: str, kwargs: dict) -> torch.nn.Module:
    """Load a local state dict (.safetensors, or .bin/.pt/.pth read with weights_only=True); a
    file that is not weights, or holds more than tensors, is a ValueError naming `pretrained`."""
    judge_weights_file(path, "pretrained")
    try:
        return open_clip.create_model(name, pretrained=path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"parameter pretrained = {path!r} was refused: it holds more than tensors ({refusal_reason(err)})"
        ) from None
    except RuntimeError as err:
        raise ValueError(
            f"parameter pretrained = {path!r} does not fit CLIP architecture {name!r} ({refusal_reason(err)})"
        ) from None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register_model_config(path_or_dict: str | Path | dict, name: str | None = None) -> list[str]:
    """Register custom open_clip architectures; returns the names registered.

    Accepts a folder of JSON configs, one JSON file (named by its stem unless `name` is given),
    or a config dict (then `name` is required). open_clip reads configs only from files, so a dict
    is written to a temporary file first.
    """
    if isinstance(path_or_dict, dict):
        if not name:
            raise ValueError("register_model_config: a config dict needs a name")
        _check_model_config(path_or_dict, name)
        path = Path(tempfile.mkdtemp(prefix="lafite_clip_cfg_")) / f"{name}.json"
        path.write_text(json.dumps(path_or_dict))
        open_clip.add_model_config(path)
        return [name]
    path = Path(path_or_dict)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        for file in files:
            _check_model_config(json.loads(file.read_text()), file.stem)
        open_clip.add_model_config(path)
        return [file.stem for file in files]
    if not path.is_file():
        raise FileNotFoundError(f"model config not found: {path}")
    config = json.loads(path.read_text())
    if name and name != path.stem:
        return register_model_config(config, name)
    _check_model_config(config, path.stem)
    open_clip.add_model_config(path)
    return [path.stem]


def _check_model_config(config: dict, name: str) -> None:
    # open_clip silently skips configs without these keys; fail loudly instead
    missing = [key for key in _REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"model config {name!r} lacks {', '.join(missing)}")


def list_encoders() -> list[str]:
    """Every CLIP architecture open_clip knows, including the kit's own."""
    return open_clip.list_models()


def _square_size(size: Any, name: str) -> int:
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ValueError(f"CLIP {name!r} has a non-square input {tuple(size)}; only square inputs are supported")
        size = size[0]
    return int(size)


def _feature_dim(model: torch.nn.Module, image_size: int, dtype: torch.dtype) -> int:
    """The joint-space size: the image tower's output size, or measured on one blank image."""
    output_dim = getattr(model.visual, "output_dim", None)
    if isinstance(output_dim, int):
        return output_dim
    device = next(model.parameters()).device
    with torch.no_grad():
        blank = torch.zeros(1, 3, image_size, image_size, device=device, dtype=dtype)
        return int(model.encode_image(blank).shape[-1])


def _random_square_crop(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One random square crop, side U[CROP_MIN_FRACTION, 1) of the shorter side, shared by the batch."""
    height, width = x.shape[-2:]
    rng_device = generator.device if generator is not None else "cpu"
    fraction = CROP_MIN_FRACTION + (1 - CROP_MIN_FRACTION) * torch.rand((), generator=generator, device=rng_device)
    side = max(1, int(fraction.item() * min(height, width)))
    top = int(torch.randint(0, height - side + 1, (), generator=generator, device=rng_device))
    left = int(torch.randint(0, width - side + 1, (), generator=generator, device=rng_device))
    return x[:, :, top : top + side, left : left + side]


register_model_config(MODEL_CONFIG_DIR)
