"""Typed configs that flow unchanged from YAML params through a notebook into the library.

Every section is a dataclass; `from_dict` rejects unknown keys and wrong types with a message
that names the offending parameter, before any work starts.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Sequence, TypeVar, Union

from lafite_core.assets import DEMO_GENERATOR, REPO_PREFIX, TINY_ENCODER_GEOMETRY, TINY_ENCODER_WEIGHTS

C = TypeVar("C")

# What the generator and discriminator accept (networks.check_resolution): powers of two in this range.
MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024


@dataclass
class EncoderConfig:
    """Which CLIP: an open_clip model name plus a pretrained tag, a local weights file, or none."""

    name: str = "lafite-tiny"
    pretrained: str | None = None  # tag ("openai"), a path to .safetensors/.bin/.pt, or None
    device: str = "auto"  # auto: the run's compute device (alone: CUDA if available) | cpu | cuda:N
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"


def tiny_encoder() -> EncoderConfig:
    """The kit's shipped tiny encoder (lafite_core/assets), named by its path in the repository."""
    return EncoderConfig(name="lafite-tiny", pretrained=REPO_PREFIX + TINY_ENCODER_WEIGHTS.name)


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
    change: int = 256  # generator blocks above this resolution use structure 1 (official `change`)


@dataclass
class PerturbationConfig:
    """How a CLIP feature becomes a pseudo text feature (see perturbations.py)."""

    kind: str = "official"  # none | gaussian | official | learned | calibrated | centred
    xi: float = 3.0  # gaussian: noise-to-signal ratio
    image_alpha: float = 0.75  # official: interpolation weight for image features
    text_alpha: float = 0.1  # official: interpolation weight for caption features
    learned_weights: str | None = None  # path to a learned-perturbation state dict
    # calibrated, centred: the encoder's modality geometry (lafite_core/modality.py)
    geometry: str | None = REPO_PREFIX + TINY_ENCODER_GEOMETRY.name
    target_cosine: float | None = None  # calibrated, centred: E[cos(h', h)]; None: the geometry's matched cosine
    # calibrated, centred: each sample's E[cos(h', h)] drawn uniformly between this and target_cosine (None:
    # one level). Prompts that name less sit further from their images, so a range of levels covers them all.
    min_target_cosine: float | None = None
    # per_step: one draw of the conditions per training step, shared by its loss phases;
    # per_phase: a new draw in every phase (G, G_reg, D, D_reg), as the authors' code does.
    redraw: Literal["per_step", "per_phase"] = "per_step"


@dataclass
class LossConfig:
    """LAFITE loss terms: the authors' language-free weights by default, with the correct InfoNCE
    (contrastive_form "official" is the authors' form, which their weights were tuned with)."""

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
    # weight of MSGAN's mode-seeking term (losses.mode_seeking_loss; 0: off, as in LAFITE): makes the
    # generator use its latent for what the condition leaves open
    mode_seeking: float = 0.0
    mode_seeking_view: int | None = None  # compare images pooled to this many pixels a side; None: full size
    # CLIP's view of fakes smaller than its input: resize them up (resize), or paste them at one
    # random offset into a white canvas of CLIP's input size (official, the authors' code).
    clip_view: Literal["resize", "official"] = "resize"


def deep_merge(base: dict, override: dict) -> dict:
    """Nested dict merge where `override` wins; dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    data = _with_preset(cls, dict(data or {}), where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"unknown parameter {where}{unknown[0]!r} for {cls.__name__}; known: {', '.join(sorted(names))}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, {**_section_base(hint, fields[key], value), **value}, where=f"{where}{key}.")
        elif not _type_ok(value, hint):
            _check_choices(f"{where}{key}", value, _literal_choices(hint))
            raise TypeError(
                f"parameter {where}{key} = {value!r} has type {type(value).__name__}; expected {_hint_name(hint)}"
            )
        _check_finite(f"{where}{key}", value)
        if (cls.__name__, key) in REGISTRY_FIELDS:
            _check_registered(f"{where}{key}", value, REGISTRY_FIELDS[cls.__name__, key])
        if hint is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


# The key that names a preset of a class with `PRESETS` (TrainConfig) in a params file or section.
PRESET_KEY = "preset"


def _with_preset(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """`data` merged over the preset its `preset` key names, if `cls` has `PRESETS`: a params file
    names a recipe and states only what differs from it."""
    presets = getattr(cls, "PRESETS", None)
    if presets is None or PRESET_KEY not in data:
        return data
    name = data.pop(PRESET_KEY)
    if name not in presets:
        _check_choices(f"{where}{PRESET_KEY}", name, sorted(presets))
        raise TypeError(
            f"parameter {where}{PRESET_KEY} = {name!r} must be a preset name ({', '.join(sorted(presets))})"
        )
    return deep_merge(presets[name], data)


def _section_base(hint: type, f: dataclasses.Field, value: dict[str, Any]) -> dict[str, Any]:
    """What a section given in part is merged over: nothing if it names a `preset` (from_dict merges
    it over that preset), the preset its `name` picks if its class has `PRESETS` (ProtocolConfig),
    else the section's default in its parent."""
    presets = getattr(hint, "PRESETS", {})
    if PRESET_KEY in value and presets:
        return {}
    if value.get("name") in presets:
        return dataclasses.asdict(hint(**presets[value["name"]]))
    return _field_default(f)


def _field_default(f: dataclasses.Field) -> dict[str, Any]:
    """A nested section's default in its parent (e.g. TrainConfig's tiny NetworkConfig), as the
    base that a section given in part is merged over; {} for a section without a default."""
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    elif f.default is not dataclasses.MISSING:
        default = f.default
    else:
        return {}
    return {g.name: getattr(default, g.name) for g in dataclasses.fields(default)}


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _literal_choices(hint: Any) -> tuple:
    """The allowed values of a Literal hint, also inside Optional[...] or list[...]; () if none."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    return tuple(c for h in typing.get_args(hint) for c in _literal_choices(h))


def _check_choices(name: str, value: Any, choices: Sequence) -> None:
    """A name not among `choices` is a ValueError listing them, with the closest as a suggestion."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if choices and isinstance(item, str) and item not in choices:
            allowed = [str(c) for c in choices]
            close = difflib.get_close_matches(item, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"parameter {name} = {item!r} is not allowed; {hint}allowed: {', '.join(allowed)}")


def _check_finite(name: str, value: Any) -> None:
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"parameter {name} = {item!r} must be a finite number")


def _check_registered(name: str, value: Any, registry: str) -> None:
    """`value` (a name, or a list of names) must be registered in `registry` ("module:NAME"),
    which is imported here: the registries live in the modules above this schema."""
    module, _, attr = registry.partition(":")
    _check_choices(name, value, getattr(importlib.import_module(module), attr).names())


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


@dataclass
class DataConfig:
    """Which dataset (a name in lafite_core.data.DATASETS), where, and at what resolution.

    size and seed are read only by the procedural "shapes" dataset; split by every kind that
    has splits (shapes: train/test/heldout/all; coco, ln_coco: train/val; cub, mm_celeba_hq:
    train/test/all; fashion_mnist: train/test); skip_bad by the file readers; year, annotations and
    image_dir by coco (ln_coco: annotations, image_dir; mm_celeba_hq: image_dir, text_dir); bbox_crop
    by cub. image_folder reads the captions of `<image>.txt` next to each image (one per line; none:
    an image-only set). Relative `annotations`, `image_dir` and `text_dir` are read inside `root`."""

    kind: str = "shapes"
    root: str | None = None
    resolution: int = 32
    size: int = 60000
    seed: int = 0
    split: str = "train"
    skip_bad: bool = False  # True: leave unreadable items out and list them in ds.skipped
    year: str | int = "2014"  # coco: annotations/captions_<split><year>.json and <split><year>/ (2014 or 2017)
    annotations: str | None = None  # coco, ln_coco: the annotation file; None: the layout's own path
    image_dir: str | None = None  # coco, ln_coco, mm_celeba_hq: the image folder; None: the layout's own folder
    text_dir: str | None = None  # mm_celeba_hq: the caption folder; None: the layout's own folder
    bbox_crop: bool = True  # cub: crop around the bird's box (AttnGAN), else a centre crop


@dataclass
class PerturbationTrainingConfig:
    """Training the learned perturbation net before the GAN (perturbations.learned_perturbation_loss).

    Runs only when perturbation.kind is "learned" and perturbation.learned_weights is unset. The
    pairs are the captioned items of `paired_cache` (a feature cache folder; None: the training
    cache), so a small paired set can teach the noise shape for a large image-only set.
    """

    paired_cache: str | None = None
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-4
    temperature: float = 0.1
    kl_weight: float = 0.05


def _train_presets() -> dict[str, dict[str, Any]]:
    """TrainConfig.PRESETS: each named recipe as what differs from the defaults (the embedded one).

    The authors' runs are their repository (github.com/drboog/Lafite at 1ad161c; file:line below)
    and the paper, value for value. Their README's MS-COCO commands:
      language-free  python train.py --gpus=4 --temp=0.5 --itd=10 --itc=10 --gamma=10 --mirror=1 --mixing_prob=1.0
      standard       python train.py --gpus=4 --temp=0.5 --itd=5 --itc=10 --gamma=10 --mirror=1 --mixing_prob=0.0
    They published no CUB or MM-CelebA-HQ command, only that R1 gamma was "much smaller" there
    (their issue #5): those presets are the standard MS-COCO one with the gamma their train.py uses
    when --gamma is not given, 0.0002 * res^2 / batch = 0.2048."""
    paper256 = {
        "encoder": {"name": "ViT-B-32", "pretrained": "openai"},  # README.md:30: datasets processed with CLIP-ViT/B-32
        "network": {
            "resolution": 256,  # paper Sec. 5: MS-COCO at 256x256
            "z_dim": 512,  # train.py:249
            "w_dim": 512,  # train.py:249
            "feature_dim": 512,  # train.py:80 f_dim = 512 (ViT-B/32's embedding size)
            "mapping_layers": 8,  # train.py:100 map_num = 8
            "condition_lr_mult": 0.01,  # training/networks.py:416-417 pre_0/pre_1 lr_multiplier=0.01
            "channel_base": 32768,  # train.py:250 int(fmaps * 32768), fmaps = 1
            "channel_max": 512,  # train.py:251
            "num_fp16_res": 4,  # train.py:254
            "conv_clamp": 256.0,  # train.py:255
        },
        "perturbation": {"kind": "official"},  # training/loss.py:178-185, alphas 0.75 / 0.1 (loss.py:173-174)
        "loss": {"r1_gamma": 10.0, "pl_weight": 2.0, "style_mixing_prob": 0.9},  # README --gamma=10; loss.py:59
        "data": {"resolution": 256},
        "batch_size": 64,  # train.py:241 16 * gpus, --gpus=4
        "total_kimg": 25000.0,  # train.py:232
        "g_lr": 0.0025,  # train.py:244 lrate 0.0025 below 1024 px
        "d_lr": 0.0025,
        "xflip": True,  # README --mirror=1
        "mixed_precision": True,  # train.py:254 fp16 in the 4 highest resolutions
    }
    coco_language_free = deep_merge(
        paper256,
        {
            "perturbation": {"redraw": "per_phase"},  # training/loss.py:178 noise drawn in every phase
            "loss": {
                "contrastive_form": "official",  # training/loss.py:149 softmax of exp(sim / temp): their weights' form
                "clip_view": "official",  # training/loss.py:111-115 (fakes below 224 px only; none at 256 px)
            },
            "data": {"kind": "coco", "root": "data/coco", "split": "train"},  # README --data=COCO2014_train
            "cache": "results/cache/coco-256-vit-b-32",
            "run_dir": "results/runs/official_coco_language_free",
            "ema_kimg": 20.0,  # train.py:246 ema = batch * 10 / 32
            "progress_prompts": [
                "a man riding a wave on top of a surfboard",
                "a plate of food with broccoli",
                "a red double decker bus on a street",
                "a cat sleeping on a laptop",
            ],
        },
    )
    # --itd=5, --mixing_prob=0.0: one random caption's feature per image (training/dataset.py:137),
    # perturbed with text_alpha (training/loss.py:181)
    coco_standard = deep_merge(
        coco_language_free,
        {"loss": {"lambda_disc": 5.0}, "setting": "standard", "run_dir": "results/runs/official_coco_standard"},
    )

    def standard_run_on(kind: str, cache: str, prompts: list[str]) -> dict[str, Any]:
        """Their standard run on another data set (the authors' processed sets, README.md:40-46, at
        their dataset_tool example's 256 px, README.md:14), with the gamma their train.py:245 uses
        when --gamma is not given (see above)."""
        return deep_merge(
            coco_standard,
            {
                "loss": {"r1_gamma": 0.2048},
                "data": {"kind": kind, "root": f"data/{kind}"},
                "cache": f"results/cache/{cache}-256-vit-b-32",
                "run_dir": f"results/runs/official_{kind}",
                "progress_prompts": prompts,
            },
        )

    cub = standard_run_on(
        "cub",
        "cub",
        [
            "a small bird with a red head and black wings",
            "this bird is yellow with a short beak",
            "a white bird with grey wings and a long neck",
        ],
    )
    mm_celeba_hq = standard_run_on(
        "mm_celeba_hq",
        "mm-celeba-hq",
        [
            "this woman has blond hair and is smiling",
            "a young man with black hair and a beard",
            "she has wavy brown hair and wears lipstick",
        ],
    )
    # The shipped generators' recipes (results: docs/results.md, "Prompt forms and spread"): centred
    # noise at a level each sample draws, so that full captions and short prompts both fall where
    # training conditions were, and mode seeking on an 8x8 view, so that the latent chooses what a
    # prompt leaves open.
    shapes32_prompts = {
        "perturbation": {"kind": "centred", "target_cosine": 0.9, "min_target_cosine": 0.2},
        "loss": {"mode_seeking": 1.0, "mode_seeking_view": 8},
    }
    cliplike = "lafite_core/assets/lafite-tiny-shapes-cliplike"
    # the CLIP-like encoder: every prompt form sits at cos 0.59-0.79 from its centred images, so the
    # level its geometry gives (0.76) covers them
    shapes32_prompts_cliplike = {
        "encoder": {"name": "lafite-tiny", "pretrained": f"{cliplike}.safetensors"},
        "cache": "results/cache/shapes-32-lafite-tiny-cliplike",
        "perturbation": {"kind": "centred", "geometry": f"{cliplike}.geometry.safetensors"},
        "loss": shapes32_prompts["loss"],
    }
    return {
        "shapes32": {},
        "shapes32_prompts": shapes32_prompts,
        "shapes32_prompts_cliplike": shapes32_prompts_cliplike,
        "paper256": paper256,
        "official_coco_language_free": coco_language_free,
        "official_coco_standard": coco_standard,
        "official_cub": cub,
        "official_mm_celeba_hq": mm_celeba_hq,
    }


@dataclass
class TrainConfig:
    """One training run (lafite_core/training.py): the model sections plus the loop's settings.

    The defaults are the kit's embedded CPU recipe, the preset "shapes32" (params/train.yaml,
    `make demo`): language-free LAFITE on Captioned Shapes at 32x32 with the shipped tiny encoder,
    networks about 10x cheaper than the official 32x32 ones and four times the authors' learning
    rate, the best of the recipe search (results/recipe.md).
    A nested section given in part (`network: {z_dim: 32}`) is merged over these defaults.
    `run_dir` receives config.yaml, stats.jsonl, sample grids and checkpoints/.

    Named recipes (`PRESETS`; a params file's `preset: NAME`, `lafite train --preset NAME`; the
    fields a file also gives override the preset):
      shapes32                     the embedded recipe (these defaults);
      shapes32_prompts             the shipped demo generator's: it also draws short prompts, and varies
                                   what they leave open across seeds (slower to learn full captions);
      shapes32_prompts_cliplike    the same against the CLIP-like tiny encoder;
      paper256                     the paper's model and training at 256 px with CLIP ViT-B/32, on any
                                   data (give data and cache), with the kit's correct InfoNCE;
      official_coco_language_free  the authors' language-free MS-COCO 2014 run (Lafite-G);
      official_coco_standard       their MS-COCO run with ground-truth captions (paper: FID 8.12);
      official_cub                 their CUB-200 run with captions (paper: FID 10.48);
      official_mm_celeba_hq        their Multi-modal CelebA-HQ run with captions (paper: FID 12.54).
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = _train_presets()

    encoder: EncoderConfig = field(default_factory=tiny_encoder)
    # condition_lr_mult 1 (official: 0.01): at 0.01 the per-layer condition MLPs barely move in a
    # run of minutes, and the generator ignores the prompt.
    network: NetworkConfig = field(
        default_factory=lambda: NetworkConfig(
            resolution=32,
            z_dim=64,
            w_dim=64,
            mapping_layers=2,
            channel_base=1024,
            channel_max=64,
            condition_lr_mult=1.0,
        )
    )
    # No noise: in the minutes `make demo` trains, it draws full captions best (docs/results.md). The
    # preset shapes32_prompts adds the noise and mode seeking that short prompts need, and learns slower.
    perturbation: PerturbationConfig = field(default_factory=lambda: PerturbationConfig(kind="none"))
    # StyleGAN2-ADA's small-image recipe (its "cifar" config): no path length, no style mixing.
    loss: LossConfig = field(default_factory=lambda: LossConfig(r1_gamma=1.0, pl_weight=0.0, style_mixing_prob=0.0))
    perturbation_training: PerturbationTrainingConfig = field(default_factory=PerturbationTrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)

    run_dir: str = "results/runs/train"
    cache: str = "results/cache/shapes-32-lafite-tiny"  # CLIP feature cache of `data` (data/cache.py)
    # language_free: pseudo text features from image features; standard: one random caption's
    # feature per sample and step; mixed: per sample, pseudo with probability mixing_prob.
    setting: Literal["language_free", "standard", "mixed"] = "language_free"
    mixing_prob: float = 0.5

    batch_size: int = 16  # images per step over all processes
    total_kimg: float = 30.0
    # Four times the authors' 0.0025 (paper256): for these small networks, the only change of the
    # recipe search that mattered (judged shape accuracy 0.6 at 30 kimg where 0.0025 had not reached it at 40).
    g_lr: float = 0.01
    d_lr: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    ema_kimg: float | None = None  # EMA half-life in kimg; None: batch_size * 10 / 32 (official)
    ema_rampup: float | None = 0.05  # EMA half-life at most this fraction of the images seen
    # x-flip doubles the data of symmetric datasets (the authors' runs: on); off for Shapes, whose captions,
    # and so cached features, name left and right.
    xflip: bool = False
    diffaugment: list[Literal["color", "translation", "cutout"]] = field(default_factory=list)
    gather_negatives: bool = False  # contrastive negatives from every process's batch

    tick_kimg: float = 1.0  # one stats.jsonl line per tick
    snapshot_ticks: int = 5  # checkpoint every this many ticks (and at the end)
    image_ticks: int = 5  # progress grid every this many ticks (and at the start and end)
    keep_last: int = 3  # checkpoints kept
    progress_prompts: list[str] = field(
        default_factory=lambda: [
            "a red circle",
            "a blue square",
            "a green triangle",
            "a yellow star",
            "a large white cross on a gray background",
            "a small cyan diamond in the top left corner",
        ]
    )
    progress_seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: the local rank's GPU)
    mixed_precision: bool = False  # autocast the network.num_fp16_res highest resolutions
    # The lazy regularisation passes (R1 and path length) stay eager, because compiled graphs cannot be
    # differentiated twice. Where compiling is unavailable, it warns once and runs eagerly.
    compile: bool = False  # torch.compile the main G and D passes (lafite_core/compiled.py)
    num_workers: int = 0  # data loader worker processes
    max_minutes: float | None = None  # stop with a checkpoint after this much training (job time limits)
    resume: str | None = "auto"  # auto: newest checkpoint in run_dir if any; a file; None: fresh only
    fine_tune_from: str | None = None  # start G, D and G_ema from this checkpoint's weights

    def __post_init__(self) -> None:
        """Checks that need no files or devices, so a bad params file fails before any work."""
        res = self.network.resolution
        if not (isinstance(res, int) and MIN_RESOLUTION <= res <= MAX_RESOLUTION and res & (res - 1) == 0):
            raise ValueError(
                f"parameter network.resolution = {res!r} must be a power of two from {MIN_RESOLUTION} "
                f"to {MAX_RESOLUTION} (what the networks accept)"
            )
        if self.data.resolution != res:
            raise ValueError(
                f"parameter data.resolution = {self.data.resolution} differs from "
                f"network.resolution = {res}; the generator must match the images"
            )
        positive = {
            "batch_size": self.batch_size,
            "total_kimg": self.total_kimg,
            "g_lr": self.g_lr,
            "d_lr": self.d_lr,
            "tick_kimg": self.tick_kimg,
            "snapshot_ticks": self.snapshot_ticks,
            "image_ticks": self.image_ticks,
            "keep_last": self.keep_last,
            "perturbation_training.steps": self.perturbation_training.steps,
            "loss.r1_interval": self.loss.r1_interval,
            "loss.pl_interval": self.loss.pl_interval,
            "loss.temperature": self.loss.temperature,
            "perturbation_training.batch_size": self.perturbation_training.batch_size,
            "perturbation_training.lr": self.perturbation_training.lr,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"parameter {name} = {value!r} must be positive")
        non_negative = {
            "perturbation.xi": self.perturbation.xi,
            "loss.lambda_clip": self.loss.lambda_clip,
            "loss.lambda_disc": self.loss.lambda_disc,
            "loss.r1_gamma": self.loss.r1_gamma,
            "loss.pl_weight": self.loss.pl_weight,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"parameter {name} = {value!r} must be >= 0")
        for name in ("image_alpha", "text_alpha"):
            if not 0.0 <= getattr(self.perturbation, name) <= 1.0:
                raise ValueError(
                    f"parameter perturbation.{name} = {getattr(self.perturbation, name)!r} must be in [0, 1]"
                )
        if not 0.0 <= self.mixing_prob <= 1.0:
            raise ValueError(f"parameter mixing_prob = {self.mixing_prob!r} must be in [0, 1]")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"parameter betas = {self.betas!r} must be two numbers in [0, 1)")
        if self.ema_kimg is not None and self.ema_kimg < 0:
            raise ValueError(f"parameter ema_kimg = {self.ema_kimg!r} must be >= 0 (or null)")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"parameter max_minutes = {self.max_minutes!r} must be positive (or null)")
        if self.num_workers < 0:
            raise ValueError(f"parameter num_workers = {self.num_workers!r} must be >= 0")
        if self.mixed_precision and self.network.num_fp16_res <= 0:
            raise ValueError(
                "parameter mixed_precision = true needs network.num_fp16_res > 0 "
                "(how many of the highest resolutions run in low precision)"
            )
        if not self.progress_prompts or not self.progress_seeds:
            raise ValueError("parameters progress_prompts and progress_seeds must not be empty")
        if self.resume is not None and self.fine_tune_from is not None and self.resume != "auto":
            raise ValueError(
                "parameters resume and fine_tune_from are exclusive: resume continues a run, "
                "fine_tune_from starts a new one from another run's weights"
            )


@dataclass
class PretrainConfig:
    """Contrastive pre-training of the tiny encoder on Captioned Shapes (encoder_training.py).

    params/pretrain_encoder.yaml reproduces the shipped lafite_core/assets weights."""

    architecture: str = "lafite-tiny"  # an open_clip model config name
    device: str = "cpu"
    resolution: int = 32  # Shapes render size (the encoder resizes to its own input size)
    dataset_seed: int = 0  # Shapes seed: which images are `test` (never trained on)
    seed: int = 0  # initialisation and batch sampling
    steps: int = 4000
    batch_size: int = 128  # images per step
    captions_per_image: int = 1  # captions per image per step (CLIP: 1)
    group_size: int = 4  # images per group that differ in one attribute each (1: random batches)
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    temperature_init: float = 0.07  # CLIP's initial softmax temperature (logit scale 1 / 0.07)
    learn_temperature: bool = True  # False keeps temperature_init throughout
    eval_images: int = 2000  # first images of the Shapes `test` split
    eval_every: int = 250  # steps between progress evaluations (0: only at the end)
    output_dir: str = "results/runs/pretrain_encoder"


@dataclass
class EmbedConfig:
    """Embedding a dataset into a feature cache (data/cache.py, notebooks/01_embed.ipynb).

    The default encoder is the kit's shipped tiny one; `data.skip_bad` also lets the cache skip
    images that fail to decode (listed in the cache's report.json)."""

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=tiny_encoder)
    cache_dir: str = "results/cache/shapes-32-lafite-tiny"  # TrainConfig.cache reads it
    batch_size: int = 256
    dtype: Literal["float16", "float32"] = "float16"
    shard_size: int = 4096  # items per resumable unit of work
    num_workers: int = 0  # processes reading (decoding) ahead of the encoder: worth it for real images on a GPU
    output_dir: str = "results/runs/embed"  # metrics.json (a summary of the cache)


@dataclass
class SampleConfig:
    """Prompt sampling from a trained generator (lafite_core/sampler.py, notebooks/05_sample.ipynb).

    `checkpoint` is an exported generator file, a checkpoint file or a run folder. With `prompts`
    set, the notebook writes a grid (rows = prompts, n images each) to out_dir/grid.png; the
    interactive UI starts from the first prompt and lists `runs_dir`'s runs in its menu."""

    checkpoint: str = REPO_PREFIX + DEMO_GENERATOR.name
    prompts: list[str] = field(default_factory=list)
    seed: int = 0  # image i uses the latent of seed + i
    n: int = 8  # images per prompt
    psi: float = 1.0  # truncation: 1 = none, < 1 pulls latents towards the average w
    captions: bool = True  # prompt text above each row of the saved grid
    scale: int = 4  # saved and shown images are enlarged this many times (nearest neighbour)
    device: str = "cpu"
    compile: bool = False  # torch.compile the generator (lafite_core/compiled.py); eager where unavailable
    runs_dir: str = "results/runs"
    out_dir: str = "results/runs/sample"

    def __post_init__(self) -> None:
        if self.n < 1 or self.scale < 1:
            raise ValueError(f"parameters n = {self.n} and scale = {self.scale} must be at least 1")


@dataclass
class ProtocolConfig:
    """How images are generated and compared (lafite_core/evaluation.py); every field is copied
    into each result row, so a number never travels without the protocol that produced it.

    Sample k is drawn with the latent of seed `seed + k` and prompted with a caption of eval item
    k mod N (its caption number k // N, cycling): one caption per image, cycling through the set,
    as the paper's 30k-sample protocol does. `reference_split` None compares against the first
    `reference_size` images of the evaluated split itself; the "real images" baseline takes the
    next images of that split, so it never overlaps the reference.

    Named presets (`PRESETS`, `protocol_preset`): "cpu" (the defaults, sized for the embedded Shapes
    default: 2k samples at 32 px) and "paper" (LAFITE's reported protocol: 30k samples, each from
    one caption of the evaluation set, 256 px). A params section that gives `name: paper` starts
    from that preset; the fields it also gives override it. The presets named the way papers name
    them (fid<samples>k_<dataset>_<reference split><px>) fix their reference set, `reference_dataset`
    plus `reference_split`[0:`reference_size`], and each row records both:
      fid30k_coco_val256     the common MS-COCO protocol: 30k captions of val, the first 30k val images;
      fid30k_coco_train256   the authors' code (calc_metrics.py): the same 30k vs all 82,783 train images;
      fid30k_cub_test256     30k captions of CUB test vs its 2,933 images, the reference most CUB papers use;
      fid30k_cub_train256    the authors' code on CUB: vs all 8,855 train images;
      fid6k_mm_celeba_hq_train256  the authors' code on MM-CelebA-HQ: 6k samples vs its 24,000 train images."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {  # what differs from the defaults below
        "cpu": {},
        "paper": dict(name="paper", num_samples=30000, noise_mode="random", resolution=256, reference_size=30000),
        **{
            name: dict(
                name=name,
                num_samples=samples,
                noise_mode="random",
                resolution=256,
                reference_dataset=dataset,
                reference_split=split,
                reference_size=size,
            )
            for name, samples, dataset, split, size in [
                ("fid30k_coco_val256", 30000, "coco", "val", 30000),
                ("fid30k_coco_train256", 30000, "coco", "train", 82783),
                ("fid30k_cub_test256", 30000, "cub", "test", 2933),
                ("fid30k_cub_train256", 30000, "cub", "train", 8855),
                ("fid6k_mm_celeba_hq_train256", 6000, "mm_celeba_hq", "train", 24000),
            ]
        },
    }

    name: str = "cpu"
    num_samples: int = 2000
    batch_size: int = 64  # images per generator / feature-extractor call
    seed: int = 0
    truncation_psi: float = 1.0
    noise_mode: Literal["const", "random"] = "const"  # const: the same images at any batch size
    resolution: int = 32  # images are scored at this size (generated ones resized if they differ)
    reference_dataset: str | None = None  # the dataset (data.kind) a named preset is defined on; None: any
    reference_split: str | None = None  # None: the evaluated split's own images
    reference_size: int = 2000
    isc_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    r_precision_candidates: int = 100  # the prompt plus 99 other captions of the eval set

    def __post_init__(self) -> None:
        for name in (
            "num_samples",
            "batch_size",
            "resolution",
            "reference_size",
            "isc_splits",
            "kid_subsets",
            "kid_subset_size",
            "r_precision_candidates",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"parameter protocol.{name} = {getattr(self, name)!r} must be positive")
        if self.kid_subset_size > min(self.num_samples, self.reference_size):
            raise ValueError(
                f"parameter protocol.kid_subset_size = {self.kid_subset_size} exceeds num_samples "
                f"({self.num_samples}) or reference_size ({self.reference_size})"
            )
        if self.r_precision_candidates < 2:
            raise ValueError(
                "parameter protocol.r_precision_candidates must be at least 2 (the prompt and a distractor)"
            )


def protocol_preset(name: str) -> ProtocolConfig:
    """A named protocol of ProtocolConfig.PRESETS ("cpu", "paper", "fid30k_coco_val256", ...)."""
    if name not in ProtocolConfig.PRESETS:
        raise KeyError(f"unknown protocol {name!r}; known: {', '.join(sorted(ProtocolConfig.PRESETS))}")
    return ProtocolConfig(**ProtocolConfig.PRESETS[name])


@dataclass
class EvalConfig:
    """Evaluating one generator (lafite_core/evaluation.py, notebooks/04_evaluate.ipynb).

    The defaults are the embedded CPU evaluation: the default training run on Captioned Shapes at
    32 px, scored on the `test` split (unseen images of attribute combinations seen in training)
    and on `heldout_split` (the zero-shot shape-colour pairs) with the CPU protocol. Metrics are
    names in lafite_core.metrics.METRICS; `eval_encoder` is the CLIP that CLIP score, R-precision
    and CLIP-space FID/KID read (it may differ from the one the generator was trained with).
    Inception metrics (fid, kid, is) need `inception_weights`, a local torch-fidelity Inception
    file, unless torch-fidelity can download its own. One row per (subject, split) is appended to
    `results_dir`/`table`.csv and .md; subjects are the model and the `baselines`."""

    checkpoint: str = "results/runs/train"  # a checkpoint file, a run folder or an exported generator
    data: DataConfig = field(
        default_factory=lambda: DataConfig(kind="shapes", resolution=32, size=4000, seed=0, split="test")
    )
    heldout_split: str | None = "heldout"  # evaluated like data.split; None: only data.split
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    metrics: list[str] = field(
        default_factory=lambda: ["clip_fid", "clip_kid", "clip_score", "r_precision", "caption_accuracy"]
    )
    baselines: list[Literal["real", "shuffled"]] = field(default_factory=lambda: ["real", "shuffled"])
    eval_encoder: EncoderConfig = field(default_factory=tiny_encoder)
    inception_weights: str | None = None  # None: torch-fidelity downloads its own (needs internet)
    attribute_classifier: str = "lafite_core/assets/attribute-classifier.safetensors"
    stats_cache: str = "results/cache/reference-features"
    table: str = "shapes_eval"
    results_dir: str = "results"
    output_dir: str = "results/runs/evaluate"  # metrics.json, sample grids
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        if self.data.resolution != self.protocol.resolution:
            raise ValueError(
                f"parameter data.resolution = {self.data.resolution} differs from "
                f"protocol.resolution = {self.protocol.resolution}; real and generated images "
                f"must be compared at one size"
            )
        wanted = self.protocol.reference_dataset
        if wanted is not None and wanted != self.data.kind:
            raise ValueError(
                f"protocol {self.protocol.name!r} compares against {wanted} images, but data.kind = "
                f"{self.data.kind!r}; its numbers would not mean what its name says"
            )
        if not self.metrics:
            raise ValueError("parameter metrics is empty; name at least one (lafite_core.metrics.METRICS)")
        if not self.table or "/" in self.table:
            raise ValueError(f"parameter table = {self.table!r} must be a plain file name (no folders)")


@dataclass
class AblationConfig:
    """One point of the perturbation ablation (lafite_core/ablation.py, notebooks/03_ablation.ipynb):
    a training run and its evaluation, both placed inside `output_dir`."""

    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "results/runs/ablation"


@dataclass
class TimeToQualityConfig:
    """One training run judged at every snapshot (lafite_core/time_to_quality.py,
    notebooks/06_time_to_quality.ipynb): how many kimg and minutes it needs to draw what it is told.
    The run and its curve go inside `output_dir`; params/recipe.yaml sweeps it."""

    train: TrainConfig = field(default_factory=TrainConfig)
    judge_seed: int = 0  # attribute combination i is drawn from the latent of judge_seed + i
    output_dir: str = "results/runs/time_to_quality"


@dataclass
class DemoConfig:
    """The whole embedded-default pipeline (lafite_core/demo.py, `make demo`): embed Shapes, train
    the main language-free model for a wall-time budget (train.max_minutes), evaluate it against
    the baselines, judge it beside a generator trained for longer (`compare_with`, the shipped one)
    and draw both generators' prompts. Every step but the judge is a notebook run by the runner, so
    each has its executed notebook and log under results/runs/, and re-running skips finished steps."""

    embed: EmbedConfig = field(default_factory=EmbedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    compare_with: str | None = REPO_PREFIX + DEMO_GENERATOR.name  # None: judge the demo's model alone
    prompts: list[str] = field(default_factory=list)
    samples_per_prompt: int = 6
    workers: int = 2  # parallel steps after training (training itself gets every core)
    out_dir: str = "results/demo"
    results_root: str = "results"  # run folders go to results_root/runs


# Parameters whose values are names in a registry: (config class, field) -> "module:REGISTRY".
# from_dict checks them at load, so a typo fails before any work, listing the registered names.
REGISTRY_FIELDS: dict[tuple[str, str], str] = {
    ("PerturbationConfig", "kind"): "lafite_core.perturbations:PERTURBATIONS",
    ("DataConfig", "kind"): "lafite_core.data:DATASETS",
    ("EvalConfig", "metrics"): "lafite_core.metrics:METRICS",
    ("TrainConfig", "setting"): "lafite_core.conditions:SETTINGS",
    ("TrainConfig", "diffaugment"): "lafite_core.augment:AUGMENTATIONS",
}
