"""The authors' snapshot pickles -> the kit's generator file (and a training checkpoint with D).

    python -m lafite_core.convert network-snapshot.pkl generator.safetensors \\
        --encoder ViT-B-32 --pretrained openai [--training-checkpoint run/checkpoints]

The snapshot is read by `restricted_unpickler` (no code from it runs). Its modules' tensors are
renamed onto the kit's networks, which are sized from the tensor shapes alone: resolution, image
channels, z/w/f sizes, mapping depth, channel_base/channel_max and `change` (the highest resolution
of structure-2 blocks). The kit's networks compute what the authors' do, so the converted G_ema
gives the authors' images; the discriminator's projection is per sample (theirs sums it over the
batch), so D matches theirs for one image at a time.

A snapshot does not say which CLIP it was trained with: the caller names it (the authors used
OpenAI's ViT-B/32, some models ViT-B/16), and it is recorded as the generator's encoder identity.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

from lafite_core import checkpoint as ckpt
from lafite_core.assets import resolve_asset
from lafite_core.config import DataConfig, EncoderConfig, NetworkConfig, TrainConfig, to_dict
from lafite_core.encoders import load_encoder
from lafite_core.networks import Discriminator, Generator, channels_at
from lafite_core.ops import fir_filter
from lafite_core.params import command_parser, run_main
from lafite_core.restricted_unpickler import PersistentObject, load as load_pickle
from lafite_core.sampler import write_generator
from lafite_core.tensor_files import judge_weights_file

# The authors' per-layer style modules, by structure, and their names in the kit's layers.
STYLE_NAMES = {
    2: {"pre_0": "style.condition_mlp.0", "pre_1": "style.condition_mlp.1", "affine_0": "style.affine"},
    1: {
        "affine": "style.affine",
        **{f"scale_layer_{i}": f"style.scale_mlp.{i}" for i in range(3)},
        **{f"bias_layer_{i}": f"style.bias_mlp.{i}" for i in range(3)},
    },
}
SYNTHESIS_LAYERS = ("conv0", "conv1", "torgb")
NETWORK_CLASSES = {"G": "Generator", "G_ema": "Generator", "D": "Discriminator"}
FILTER = "resample_filter"  # a constant in the kit (not in its state dicts); checked, not copied


# ------------------------------------------------------------------------------ snapshot
def read_snapshot(path: str | Path) -> dict[str, Any]:
    """The snapshot dict (G, D, G_ema as PersistentObjects), refusing any other kind of pickle."""
    judge_weights_file(path, "snapshot", kinds=("a Python pickle",), code_check=False)  # its unpickler judges code
    snapshot = load_pickle(path)
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("G_ema"), PersistentObject):
        found = sorted(map(str, snapshot)) if isinstance(snapshot, dict) else type(snapshot).__name__
        raise ValueError(f"{path} is a pickle but not a LAFITE snapshot: expected a dict with G_ema, found {found}")
    for name, class_name in NETWORK_CLASSES.items():
        module = snapshot.get(name)
        if isinstance(module, PersistentObject) and module.class_name != class_name:
            raise ValueError(f"{path}: its {name} is a {module.class_name}, not the authors' LAFITE {class_name}")
    return snapshot


def child(module: PersistentObject, name: str) -> PersistentObject:
    found = module.children().get(name)
    if not isinstance(found, PersistentObject):
        raise ValueError(f"the snapshot's {module.class_name} has no submodule {name!r}")
    return found


def _attr(module: PersistentObject, name: str) -> Any:
    return module.state.get(name)


def _number(module: PersistentObject, name: str) -> float:
    value = _attr(module, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"the snapshot's {module.class_name} has no number {name!r} (found {value!r})")
    return float(value)


def _blocks(module: PersistentObject) -> dict[int, PersistentObject]:
    """Submodules b4, b8, ... by resolution."""
    return {int(k[1:]): v for k, v in module.children().items() if re.fullmatch(r"b\d+", k) and v is not None}


def _own_tensors(module: PersistentObject, where: str) -> dict[str, torch.Tensor]:
    """A module's tensors without its resampling filter, after checking that it is the kit's."""
    tensors = module.tensors()
    if FILTER in tensors and not torch.equal(tensors.pop(FILTER).float(), fir_filter()):
        raise ValueError(f"{where}: a resampling filter other than [1, 3, 3, 1] is not supported")
    return tensors


def _structure(layer: PersistentObject, where: str) -> int:
    names = {k for k, v in layer.children().items() if v is not None}
    for structure, styles in STYLE_NAMES.items():
        if names == set(styles):
            return structure
    raise ValueError(f"{where}: style modules {sorted(names)} are neither structure 1 nor 2; not supported")


# ------------------------------------------------------------------------------ config
def network_config(G: PersistentObject, D: PersistentObject | None = None) -> NetworkConfig:
    """The NetworkConfig that sizes the kit's networks like the snapshot's, from tensor shapes."""
    mapping, synthesis = child(G, "mapping"), child(G, "synthesis")
    if "embed" in mapping.children() and mapping.children()["embed"] is not None:
        raise ValueError("the snapshot's generator takes class labels (c_dim > 0); LAFITE's does not")
    fcs = sorted(int(k[2:]) for k in mapping.children() if re.fullmatch(r"fc\d+", k))
    if fcs != list(range(len(fcs))) or not fcs:
        raise ValueError(f"mapping layers must be fc0..fcN, found {sorted(mapping.children())}")
    first, last = child(mapping, "fc0"), child(mapping, f"fc{fcs[-1]}")
    blocks = _blocks(synthesis)
    if 4 not in blocks:
        raise ValueError(f"the snapshot's synthesis network has no 4x4 block (blocks: {sorted(blocks)})")
    resolution = max(blocks)
    channels = {res: child(b, "conv1").tensors()["weight"].shape[0] for res, b in blocks.items()}
    structures = {res: _structure(child(b, "conv1"), f"synthesis.b{res}.conv1") for res, b in blocks.items()}
    style = child(child(blocks[4], "conv1"), "pre_0" if structures[4] == 2 else "scale_layer_0")
    cfg = NetworkConfig(
        resolution=resolution,
        img_channels=child(blocks[resolution], "torgb").tensors()["weight"].shape[0],
        z_dim=first.tensors()["weight"].shape[1],
        w_dim=last.tensors()["weight"].shape[0],
        feature_dim=style.tensors()["weight"].shape[1],
        mapping_layers=len(fcs),
        mapping_lr_mult=_number(first, "bias_gain"),
        condition_lr_mult=_number(style, "bias_gain"),
        **_channel_sizes(channels),
        num_fp16_res=sum(bool(_attr(b, "use_fp16")) for b in blocks.values()),
        conv_clamp=_optional_float(_attr(child(blocks[resolution], "conv1"), "conv_clamp")),
        change=_change(structures),
    )
    if D is not None:
        cfg.mbstd_group_size = int(_number(child(child(D, "b4"), "mbstd"), "group_size"))
    wrong = {r: c for r, c in channels.items() if channels_at(r, cfg) != c}
    if sorted(blocks) != [2**i for i in range(2, resolution.bit_length())] or wrong:
        raise ValueError(f"the snapshot's blocks {sorted(blocks)} and channels {channels} are not StyleGAN2's")
    return cfg


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _channel_sizes(channels: dict[int, int]) -> dict[str, int]:
    """channel_base and channel_max that give these channels (min(base // res, max) per resolution).
    When every block has channel_max channels, any large base does: the kit's default if it fits."""
    channel_max = max(channels.values())
    below = [r for r in sorted(channels) if channels[r] < channel_max]
    default = NetworkConfig().channel_base
    if below:
        base = channels[below[0]] * below[0]
    else:
        base = default if default // max(channels) >= channel_max else channel_max * max(channels)
    return {"channel_base": base, "channel_max": channel_max}


def _change(structures: dict[int, int]) -> int:
    """The highest structure-2 resolution when structure 1 follows it; else the kit's default
    (raised to the resolution if needed), which builds the same all-structure-2 network."""
    two = [r for r, s in structures.items() if s == 2]
    one = [r for r, s in structures.items() if s == 1]
    if one and (not two or max(two) > min(one)):
        raise ValueError(f"structure 1 must follow structure 2 by resolution, found {dict(sorted(structures.items()))}")
    return max(two) if one else max(NetworkConfig().change, max(structures))


# ------------------------------------------------------------------------------ tensors
def generator_state(G: PersistentObject) -> dict[str, torch.Tensor]:
    """The authors' generator tensors under the kit's Generator names."""
    mapping, synthesis = child(G, "mapping"), child(G, "synthesis")
    state = {"mapping_network.w_avg": mapping.tensors()["w_avg"]}
    for name, fc in mapping.children().items():
        if fc is None:
            continue
        for key, tensor in fc.tensors().items():
            state[f"mapping_network.layers.{name[2:]}.{key}"] = tensor
    for index, (res, block) in enumerate(sorted(_blocks(synthesis).items())):
        prefix, where = f"synthesis_network.blocks.{index}.", f"synthesis.b{res}"
        unknown = set(k for k, v in block.children().items() if v is not None) - set(SYNTHESIS_LAYERS)
        if unknown:
            raise ValueError(f"{where}: submodules {sorted(unknown)}; only the skip architecture is supported")
        state.update({prefix + k: v for k, v in _own_tensors(block, where).items()})
        for name in SYNTHESIS_LAYERS:
            layer = block.children().get(name)
            if layer is None:
                continue
            state.update({f"{prefix}{name}.{k}": v for k, v in _own_tensors(layer, f"{where}.{name}").items()})
            for theirs, ours in STYLE_NAMES[_structure(layer, f"{where}.{name}")].items():
                state.update({f"{prefix}{name}.{ours}.{k}": v for k, v in child(layer, theirs).tensors().items()})
    return state


def discriminator_state(D: PersistentObject) -> dict[str, torch.Tensor]:
    """The authors' discriminator tensors under the kit's Discriminator names."""
    if _attr(D, "use_norm") or not _attr(D, "use_fts"):
        raise ValueError("the snapshot's D normalises its features or has no fts head; the kit's D does neither")
    state = {}
    blocks = _blocks(D)
    for index, res in enumerate(sorted((r for r in blocks if r > 4), reverse=True)):
        for name, layer in blocks[res].children().items():
            where = f"D.b{res}.{name}"
            state.update({f"blocks.{index}.{name}.{k}": v for k, v in _own_tensors(layer, where).items()})
    for name, layer in blocks[4].children().items():
        state.update({f"epilogue.{name}.{k}": v for k, v in _own_tensors(layer, f"D.b4.{name}").items()})
    return state


def _filled(network: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the snapshot's {what} does not map onto the kit's: {err}") from None
    return network.eval().requires_grad_(False)


def generator(G: PersistentObject, cfg: NetworkConfig) -> Generator:
    """A kit Generator holding the snapshot generator's weights."""
    return _filled(Generator(cfg, cfg.feature_dim), generator_state(G), "generator")


def discriminator(D: PersistentObject, cfg: NetworkConfig) -> Discriminator:
    return _filled(Discriminator(cfg, cfg.feature_dim), discriminator_state(D), "discriminator")


# ------------------------------------------------------------------------------ encoder
def encoder_identity(encoder: EncoderConfig, feature_dim: int) -> dict:
    """The identity a kit encoder built from `encoder` would have, as samplers and runs check it.

    A local weights file is loaded (its sha256 recorded, its architecture checked); a pretrained
    tag is not downloaded: its identity follows from open_clip's model config."""
    pretrained = resolve_asset(encoder.pretrained)
    if pretrained is None:
        raise ValueError("name the CLIP the snapshot was trained with: a pretrained tag (openai) or a weights file")
    if Path(pretrained).is_file():
        identity = load_encoder(EncoderConfig(name=encoder.name, pretrained=pretrained, device="cpu")).identity()
    else:
        model = open_clip.get_model_config(encoder.name)
        if model is None:
            close = difflib.get_close_matches(encoder.name, open_clip.list_models(), n=5)
            raise ValueError(f"unknown CLIP model {encoder.name!r}; close matches: {close or 'none'}")
        if not open_clip.get_pretrained_cfg(encoder.name, pretrained):
            tags = open_clip.list_pretrained_tags_by_model(encoder.name)
            raise ValueError(f"{pretrained!r} is neither a weights file nor a tag of {encoder.name} ({tags})")
        identity = {
            "name": encoder.name,
            "pretrained": pretrained,
            "weights_sha256": None,
            "feature_dim": model["embed_dim"],
            "image_size": model["vision_cfg"]["image_size"],
        }
    if identity["feature_dim"] != feature_dim:
        raise ValueError(
            f"CLIP {encoder.name} gives {identity['feature_dim']}-d features; the snapshot's generator "
            f"takes {feature_dim}-d conditions"
        )
    return identity


# ------------------------------------------------------------------------------ convert
def convert_snapshot(
    snapshot: str | Path,
    out: str | Path,
    encoder: EncoderConfig,
    training_checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Write the snapshot's G_ema as an exported generator at `out`; with `training_checkpoint`
    (a folder), also a checkpoint with G, D and G_ema to start a run from (`fine_tune_from`).
    Returns what was written and the inferred network config."""
    snap = read_snapshot(snapshot)
    cfg = network_config(snap["G_ema"], snap.get("D"))
    identity = encoder_identity(encoder, cfg.feature_dim)
    run_config = TrainConfig(encoder=encoder, network=cfg, data=DataConfig(resolution=cfg.resolution))
    G_ema = generator(snap["G_ema"], cfg)
    nimg = snapshot_nimg(snapshot)
    info = {"config": to_dict(run_config), "encoder_identity": identity, "step": 0, "nimg": nimg, "path": str(snapshot)}
    written = {"generator": write_generator(ckpt.module_state(G_ema), info, out), "network": to_dict(cfg)}
    if training_checkpoint is not None:
        if not isinstance(snap.get("G"), PersistentObject) or not isinstance(snap.get("D"), PersistentObject):
            raise ValueError(f"{snapshot} holds no G and D; only a generator can be converted")
        state = {
            "config": ckpt.to_json_string(info["config"]),
            "encoder_identity": ckpt.to_json_string(identity),
            "G": ckpt.module_state(generator(snap["G"], cfg)),
            "D": ckpt.module_state(discriminator(snap["D"], cfg)),
            "G_ema": ckpt.module_state(G_ema),
            "step": 0,
            "nimg": nimg,
        }
        written["checkpoint"] = ckpt.save_checkpoint(state, training_checkpoint, nimg=nimg)
    return written


def snapshot_nimg(path: str | Path) -> int:
    """Images seen, from the authors' file name network-snapshot-<kimg>.pkl (0 for other names)."""
    found = re.fullmatch(r"network-snapshot-(\d+)\.pkl", Path(path).name)
    return int(found.group(1)) * 1000 if found else 0


def main(argv: list[str] | None = None) -> int:
    """Convert an official LAFITE snapshot pickle into the kit's formats, running no code from it."""
    parser = command_parser("convert", main.__doc__)
    parser.add_argument("snapshot", help="the authors' network-snapshot-*.pkl")
    parser.add_argument("out", help="the exported generator to write (.safetensors)")
    parser.add_argument("--encoder", required=True, help="open_clip name of the CLIP it was trained with (ViT-B-32)")
    parser.add_argument("--pretrained", required=True, help="that CLIP's weights: a tag (openai) or a local file")
    parser.add_argument(
        "--training-checkpoint", help="also write G, D and G_ema as a checkpoint in this folder (default: none)"
    )
    args = parser.parse_args(argv)
    written = convert_snapshot(
        args.snapshot, args.out, EncoderConfig(name=args.encoder, pretrained=args.pretrained), args.training_checkpoint
    )
    net = written["network"]
    print(f"{written['generator']}: {net['resolution']} px, f = {net['feature_dim']}, change = {net['change']}")
    if "checkpoint" in written:
        print(f"{written['checkpoint']}: G, D and G_ema (start a run with fine_tune_from)")
    return 0


if __name__ == "__main__":
    run_main(main)
