"""Typed configs that flow unchanged from YAML params through a notebook into the library.

Every section is a dataclass; `from_dict` rejects unknown keys and wrong types with a message
that names the offending parameter, before any work starts.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

C = TypeVar("C")


@dataclass
class EncoderConfig:
    """Which CLIP: an open_clip model name plus a pretrained tag, a local weights file, or none."""

    name: str = "lafite-tiny"
    pretrained: str | None = None  # tag ("openai"), a path to .safetensors/.bin/.pt, or None
    device: str = "cpu"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"


@dataclass
class NetworkConfig:
    """Conditional StyleGAN2 sizes. `feature_dim` None means: read it from the encoder."""

    resolution: int = 32
    img_channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    feature_dim: int | None = None
    mapping_layers: int = 8
    mapping_lr_mult: float = 0.01
    condition_lr_mult: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0  # highest resolutions that run under autocast (official: 4)
    conv_clamp: float | None = None  # official: 256 when num_fp16_res > 0
    mbstd_group_size: int = 4


@dataclass
class PerturbationConfig:
    """How a CLIP feature becomes a pseudo text feature (see perturbations.py)."""

    kind: str = "official"  # none | gaussian | official | learned
    xi: float = 3.0  # gaussian: noise-to-signal ratio
    image_alpha: float = 0.75  # official: interpolation weight for image features
    text_alpha: float = 0.1  # official: interpolation weight for caption features
    shared_noise: bool = False  # official code draws one noise vector per batch
    learned_weights: str | None = None  # path to a learned-perturbation state dict


@dataclass
class LossConfig:
    """LAFITE loss weights (official language-free values by default)."""

    temperature: float = 0.5
    lambda_clip: float = 10.0  # lambda_G, "itc": L_ConG weight
    lambda_disc: float = 10.0  # lambda_D, "itd": L_ConD weight (5 with captions)
    contrastive_form: Literal["infonce", "official"] = "infonce"
    contrastive_lam: float = 0.0  # weight of the x->y direction; official default 0 (only y->x)
    r1_gamma: float = 10.0
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    style_mixing_prob: float = 0.9


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, hint))
    return isinstance(value, hint)


def from_dict(cls: type[C], data: dict[str, Any] | None, where: str = "") -> C:
    """Build dataclass `cls` from a plain dict, checking keys and types recursively."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown parameter {where}{unknown[0]!r} for {cls.__name__}; known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, where=f"{where}{key}.")
        elif not _type_ok(value, hint):
            raise TypeError(
                f"parameter {where}{key} = {value!r} has type {type(value).__name__}; expected {_hint_name(hint)}"
            )
        if hint is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_yaml(path: str | Path, cls: type[C]) -> C:
    """Load one YAML file into `cls`; the file name appears in every error."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"params file not found: {path}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameters, got {type(data).__name__}")
    try:
        return from_dict(cls, data)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{path}: {err}") from None


def from_namespace(cls: type[C], namespace: dict[str, Any]) -> C:
    """Build `cls` from a notebook's parameter variables (one variable per top-level field)."""
    names = [f.name for f in dataclasses.fields(cls)]
    return from_dict(cls, {n: namespace[n] for n in names if n in namespace})
