"""Text-to-image sampling from a trained LAFITE generator: the API behind notebooks/05_sample.

At inference LAFITE feeds the CLIP *text* feature of a prompt where training fed pseudo text
features (paper Sec. 3.1), so a sampler is the generator plus the very CLIP it was trained with.
A generator comes from one of three sources, always read as weights only (nothing is executed):

- an exported generator file (`.safetensors`): G_ema's tensors, with the training config and the
  encoder identity as JSON in the file's metadata (`export_generator` writes it; the kit ships
  one, `lafite_core/assets/demo-generator.safetensors`);
- a training checkpoint (`checkpoint-*.pt`, read with `torch.load(weights_only=True)`);
- a run folder (its newest checkpoint under `checkpoints/`).

The encoder is rebuilt from the stored identity (open_clip name + weights file or tag) and checked
against it (weights sha256, feature size), so prompts land in the feature space the generator was
conditioned on. Image i of a request uses the latent of seed `seed + i` and constant noise, so the
same seed gives the same images whatever the batch size, and only the condition differs between
prompts.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lafite_core import checkpoint as ckpt
from lafite_core.assets import ASSETS_DIR, DEMO_GENERATOR, resolve_asset
from lafite_core.compiled import compile_or_eager
from lafite_core.config import EncoderConfig, NetworkConfig, SampleConfig, from_dict
from lafite_core.data import shapes
from lafite_core.encoders import check_text, load_encoder, text_notice
from lafite_core.grids import latents, save_grid
from lafite_core.networks import Generator
from lafite_core.params import DefaultsShown, command_parser, run_main
from lafite_core.tensor_files import judge_weights_file, read_tagged_safetensors

GENERATOR_FORMAT = "lafite-generator-v1"
BATCH = 32  # images per generator call
SHAPES_ENCODER_CARDS = "lafite-tiny-shapes*.json"  # in ASSETS_DIR: the shipped encoders trained on Shapes
GENERIC_EXAMPLE_PROMPTS = ("a photo of a dog", "a red car parked on a street", "a bowl of fruit on a wooden table")
PROMPT_LABEL_WORDS = 8  # a notice names a longer prompt by its first words


# ------------------------------------------------------------------------------ sources
def checkpoint_path(source: str | Path) -> Path:
    """The file a source names: the file itself, or a run folder's newest checkpoint."""
    path = Path(resolve_asset(str(source)))
    if path.is_dir():
        newest = ckpt.latest_checkpoint(path / "checkpoints") or ckpt.latest_checkpoint(path)
        if newest is None:
            raise FileNotFoundError(f"run folder {path} holds no checkpoint (looked in {path / 'checkpoints'})")
        return newest
    if not path.is_file():
        raise FileNotFoundError(
            f"generator not found: {path.resolve()} (give an exported .safetensors file, a checkpoint-*.pt file "
            f"or a run folder; train one with `lafite run notebooks/02_train.ipynb --params params/train.yaml` "
            f"(results/runs/02_train-<id>/out), `lafite train --params params/train.yaml` (results/runs/train) "
            f"or `make demo`; runs with a checkpoint now: {_run_names()})"
        )
    return path


def _run_names(runs_dir: str | Path = "results/runs") -> str:
    runs = [source for label, source in available_generators(runs_dir).items() if label.startswith("run:")]
    return ", ".join(runs[:5]) or "none"


def read_generator(source: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(G_ema state dict, info) from any source; info has config, encoder_identity, step, nimg, path."""
    path = checkpoint_path(source)
    if path.suffix == ".safetensors":
        return _read_exported(path)
    state = ckpt.load_checkpoint(path, parameter="checkpoint")
    missing = [k for k in ("config", "encoder_identity", "G_ema") if k not in state]
    if missing:
        raise ValueError(f"{path} is a checkpoint without {', '.join(missing)}; it cannot be sampled from")
    return state["G_ema"], _generator_info(state, path)


def _generator_info(fields: dict, path: Path) -> dict[str, Any]:
    """info from a checkpoint's entries or an exported file's metadata: config and encoder identity
    are JSON text in both, step and nimg numbers or their text."""
    return {
        "config": json.loads(fields["config"]),
        "encoder_identity": json.loads(fields["encoder_identity"]),
        "step": int(fields.get("step", 0)),
        "nimg": int(fields.get("nimg", 0)),
        "path": str(path),
    }


def load_generator(source: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(G_ema in eval mode on `device`, info) from any source: an exported file, a checkpoint or a
    run folder; info as read_generator's."""
    state, info = read_generator(source)
    network = from_dict(NetworkConfig, info["config"]["network"])
    G = Generator(network, network.feature_dim or info["encoder_identity"]["feature_dim"])
    try:
        G.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(
            f"{info['path']}: its weights do not fit the network it describes ({str(err).splitlines()[0]})"
        ) from None
    return G.to(device).eval().requires_grad_(False), info


def _read_exported(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    judge_weights_file(path, "checkpoint", kinds=("a safetensors file",))
    try:
        tensors, meta = read_tagged_safetensors(path, GENERATOR_FORMAT)
    except ValueError as err:
        raise ValueError(f"{err}; export a generator with lafite_core.sampler.export_generator") from None
    return tensors, _generator_info(meta, path)


def export_generator(source: str | Path, out_path: str | Path) -> Path:
    """Write G_ema of a checkpoint (or run folder) as a small safetensors file that a sampler reads:
    no discriminator, optimiser or RNG state, only what generation needs."""
    state, info = read_generator(source)
    return write_generator(state, info, out_path)


def write_generator(state: dict[str, Tensor], info: dict[str, Any], out_path: str | Path) -> Path:
    """Write a generator's state dict and info (as read_generator gives them) as an exported file."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": GENERATOR_FORMAT,
        "config": json.dumps(info["config"], sort_keys=True),
        "encoder_identity": json.dumps(info["encoder_identity"], sort_keys=True),
        "step": str(info["step"]),
        "nimg": str(info["nimg"]),
        "source": Path(info["path"]).name,
    }
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_path), metadata=meta)
    return out_path


def available_generators(runs_dir: str | Path = "results/runs") -> dict[str, str]:
    """Label -> source for a checkpoint menu: the shipped generators first (the default one leading), then every run under
    `runs_dir` that holds a checkpoint, newest first (a run folder of its own, a runner run whose
    training wrote to its `out/` folder, or an ablation point's `out/train/`)."""
    shipped = sorted(ASSETS_DIR.glob("*.safetensors"), key=lambda p: (p != DEMO_GENERATOR, p.name))  # default first
    found = {f"shipped: {p.stem}": str(p) for p in shipped if _is_exported(p)}
    runs = []
    for folder in sorted(Path(runs_dir).iterdir()) if Path(runs_dir).is_dir() else []:
        for run in (folder, folder / "out", folder / "out" / "train"):  # own folder, runner run, ablation point
            newest = ckpt.latest_checkpoint(run / "checkpoints")
            if newest is not None:
                runs.append((newest.stat().st_mtime, folder.name, run))
                break
    for _, name, run in sorted(runs, key=lambda r: r[0], reverse=True):
        found[f"run: {name}"] = str(run)
    return found


def _is_exported(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == GENERATOR_FORMAT
    except Exception:
        return False


# ------------------------------------------------------------------------------ encoders
_ENCODERS: dict[tuple, Any] = {}


def encoder_for(identity: dict, device: str | torch.device = "cpu"):
    """The frozen CLIP a generator was trained with, rebuilt from its identity and verified.

    Loaded encoders are kept per (identity, device): switching generators that share an encoder
    costs nothing."""
    pretrained = identity.get("pretrained")
    if pretrained is None:
        raise ValueError(
            f"this generator was trained with a randomly initialised encoder "
            f"({identity.get('name')!r}, pretrained: null); its prompts cannot be encoded"
        )
    key = (json.dumps(identity, sort_keys=True), str(device))
    if key not in _ENCODERS:
        resolved = resolve_asset(pretrained)
        if identity.get("weights_sha256") and not Path(resolved).is_file():
            raise FileNotFoundError(
                f"the generator's encoder weights {pretrained} are missing "
                f"(sha256 {identity['weights_sha256'][:12]}...)"
            )
        encoder = load_encoder(EncoderConfig(name=identity["name"], pretrained=resolved, device=str(device)))
        check_encoder(encoder, identity)
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


def check_encoder(encoder, identity: dict) -> None:
    """Raise if `encoder` is not the one named by `identity` (same weights, same feature size)."""
    ours = encoder.identity()
    for field in ("name", "weights_sha256", "feature_dim"):
        if identity.get(field) is not None and ours.get(field) != identity[field]:
            raise ValueError(
                f"encoder mismatch: the generator was trained with {field} = {identity[field]!r}, "
                f"the encoder has {ours.get(field)!r}; its prompts would land in another feature space"
            )


# ------------------------------------------------------------------------------ sampling
def prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """One prompt or a list of them, each a non-empty string."""
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    if not items:
        raise ValueError("no prompt given: pass a description such as 'a red circle'")
    for i, p in enumerate(items):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {i} is empty: type a description such as 'a red circle'")
    return [p.strip() for p in items]


def interpolate_conditions(a: Tensor, b: Tensor, t: float | Sequence[float]) -> Tensor:
    """Conditions between two unit text features: normalise((1 - t) a + t b) for each t.

    The generator was trained on unit-length conditions (pseudo text features are L2-normalised),
    so the straight line between two prompts is projected back onto the sphere. t = 0 and 1 give
    a and b themselves."""
    ts = torch.as_tensor([t] if isinstance(t, (int, float)) else list(t), dtype=a.dtype, device=a.device)
    mixed = (1 - ts)[:, None] * a.reshape(1, -1) + ts[:, None] * b.reshape(1, -1)
    return F.normalize(mixed, dim=-1)


@dataclasses.dataclass
class Sampler:
    """A generator (eval mode, frozen) and the encoder its conditions come from. With `compile`,
    images come from the torch.compile'd generator (compiled.py); G itself stays the eager module."""

    G: torch.nn.Module
    encoder: Any
    info: dict
    device: torch.device
    compile: dataclasses.InitVar[bool] = False

    def __post_init__(self, compile: bool) -> None:
        self._forward = compile_or_eager(self.G, compile, "the generator")

    @classmethod
    def load(
        cls,
        source: str | Path = DEMO_GENERATOR,
        device: str | torch.device = "cpu",
        encoder=None,
        compile: bool = False,
    ) -> "Sampler":
        """Load a generator from an exported file, a checkpoint or a run folder (see the module
        docstring). `encoder` overrides the stored one (it is still checked against the identity)."""
        device = torch.device(device)
        G, info = load_generator(source, device)
        identity = info["encoder_identity"]
        if encoder is None:
            encoder = encoder_for(identity, device)
        else:
            check_encoder(encoder, identity)
        if encoder.feature_dim != G.feature_dim:
            raise ValueError(f"encoder gives {encoder.feature_dim}-d features, the generator expects {G.feature_dim}")
        return cls(G, encoder, info, device, compile)

    @property
    def resolution(self) -> int:
        return self.G.resolution

    @torch.no_grad()
    def text_features(self, prompts: str | Sequence[str]) -> Tensor:
        """Unit CLIP text features [P, f] of the prompts: the generator's conditions."""
        return self.encoder.encode_text(prompt_list(prompts)).to(self.device)

    @property
    def knows_only_shapes(self) -> bool:
        """Whether the encoder is one of the shipped ones trained on Shapes captions alone."""
        return self.info["encoder_identity"].get("weights_sha256") in shapes_encoder_hashes()

    @property
    def vocabulary(self) -> dict[str, tuple[str, ...]] | None:
        """The attribute values the encoder was trained on, by attribute; None for an open vocabulary."""
        return dict(shapes.VOCABULARIES) if self.knows_only_shapes else None

    def example_prompts(self) -> list[str]:
        """Prompts in words the encoder knows: Shapes captions for a Shapes encoder, else generic ones."""
        return shapes.example_prompts() if self.knows_only_shapes else list(GENERIC_EXAMPLE_PROMPTS)

    def notices(self, prompts: str | Sequence[str]) -> list[str]:
        """One line per prompt the encoder reads differently from how it was typed: longer than its
        context (what was cut), with words a Shapes encoder never read (or a background Shapes never
        draws), or, for another encoder, mostly words its tokenizer has no whole token for."""
        words = shapes.caption_words() if self.knows_only_shapes else None
        notes = []
        for p in prompt_list(prompts):
            label = prompt_label(p)
            notice = text_notice(check_text(self.encoder.tokenizer, p, words), label)
            backgrounds = shapes.background_notes(p) if self.knows_only_shapes else []
            if backgrounds:
                notice = (f"{notice}; " if notice else f"{label}: ") + "; ".join(backgrounds)
            if notice:
                notes.append(notice)
        return notes

    @torch.no_grad()
    def render(self, conditions: Tensor, seed: int = 0, n: int = 8, psi: float = 1.0) -> Tensor:
        """Images [C * n, 3, R, R] in [-1, 1]: for each condition row, n images with seeds seed..seed+n-1."""
        if not math.isfinite(psi):
            raise ValueError(f"truncation psi must be a finite number, got {psi}")
        z = latents(seed, n, self.G.z_dim).to(self.device)
        c = conditions.to(self.device).float().repeat_interleave(n, dim=0)
        z = z.repeat(len(conditions), 1)
        return torch.cat(
            [
                self._forward(z[i : i + BATCH], c[i : i + BATCH], truncation_psi=psi, noise_mode="const").cpu()
                for i in range(0, len(z), BATCH)
            ]
        )

    def generate(self, prompts: str | Sequence[str], n: int = 8, seed: int = 0, psi: float = 1.0) -> Tensor:
        """n images per prompt, prompt-major: [P * n, 3, R, R] in [-1, 1]."""
        return self.render(self.text_features(prompts), seed, n, psi)

    def interpolate(
        self, prompt_a: str, prompt_b: str, t: float | Sequence[float], n: int = 1, seed: int = 0, psi: float = 1.0
    ) -> Tensor:
        """n images (the same latents) at each point t in [0, 1] between the two prompts' conditions."""
        a, b = self.text_features([prompt_a, prompt_b])
        return self.render(interpolate_conditions(a, b, t), seed, n, psi)


@functools.cache
def shapes_encoder_hashes() -> frozenset[str]:
    """The weights sha256 of the shipped Shapes encoders, from their cards (no weights are hashed)."""
    cards = sorted(ASSETS_DIR.glob(SHAPES_ENCODER_CARDS))
    return frozenset(h for card in cards if (h := json.loads(card.read_text()).get("weights_sha256")))


def prompt_label(prompt: str) -> str:
    """How a notice names a prompt: whole when short, else its first PROMPT_LABEL_WORDS words."""
    words = prompt.split()
    shown = prompt if len(words) <= PROMPT_LABEL_WORDS else " ".join(words[:PROMPT_LABEL_WORDS]) + " ..."
    return f"prompt {shown!r}"


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


# ------------------------------------------------------------------------------ headless
def sample_from_config(cfg, grid_name: str = "grid.png") -> dict[str, Any]:
    """The notebook's headless run (a SampleConfig): a grid of cfg.n images per prompt (rows) in
    cfg.out_dir/grid_name and its settings in metrics.json beside it. Does nothing without prompts."""
    if not cfg.prompts:
        return {}
    started = time.perf_counter()
    sampler = Sampler.load(cfg.checkpoint, cfg.device, compile=cfg.compile)
    images = sampler.generate(cfg.prompts, n=cfg.n, seed=cfg.seed, psi=cfg.psi)
    seconds = time.perf_counter() - started
    notices = sampler.notices(cfg.prompts)
    for notice in notices:
        print(f"notice: {notice}", file=sys.stderr)
    out = Path(cfg.out_dir)
    grid = save_grid(
        images, out / grid_name, columns=cfg.n, captions=cfg.prompts if cfg.captions else None, scale=cfg.scale
    )
    summary = {
        "grid": str(grid),
        "checkpoint": sampler.info["path"],
        "prompts": list(cfg.prompts),
        "seed": cfg.seed,
        "n": cfg.n,
        "psi": cfg.psi,
        "resolution": sampler.resolution,
        "images": int(images.shape[0]),
        "seconds": round(seconds, 3),
        "generator_kimg": sampler.info["nimg"] / 1000,
        "encoder": sampler.info["encoder_identity"],
        "notices": notices,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


# ------------------------------------------------------------------------------ command line
EXPORT_SUMMARY = "G_ema of a checkpoint or run folder -> a .safetensors generator"


def main(argv: list[str] | None = None) -> int:
    """`export` a run's generator for shipping, or `sample` prompts into a grid."""
    parser = command_parser("", main.__doc__)  # its sub-commands are `lafite sample` and `lafite export`
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help=EXPORT_SUMMARY, formatter_class=DefaultsShown)
    export.add_argument("source", help="a checkpoint-*.pt or a run folder (its newest checkpoint)")
    export.add_argument("out", help="the generator file to write (.safetensors)")
    sample = sub.add_parser("sample", help="a grid of n images per prompt", formatter_class=DefaultsShown)
    sample.add_argument("prompts", nargs="+", help="one grid row per prompt")
    default = SampleConfig()
    sample.add_argument("--checkpoint", default=default.checkpoint, help="an exported generator, checkpoint or run")
    sample.add_argument("--n", type=int, default=default.n, help="images per prompt")
    sample.add_argument("--seed", type=int, default=default.seed, help="image i uses the latent of seed + i")
    sample.add_argument("--psi", type=float, default=default.psi, help="truncation (1: none)")
    sample.add_argument("--out", default=f"{default.out_dir}/grid.png", help="the grid image to write (.png)")
    sample.add_argument("--compile", action="store_true", default=default.compile, help="torch.compile the generator")
    args = parser.parse_args(argv)
    if args.command == "export":
        path = export_generator(args.source, args.out)
        print(f"{path} ({path.stat().st_size / 2**20:.1f} MB)")
        return 0
    grid = Path(args.out)
    if not grid.suffix:  # a folder, as --out meant before: its grid.png
        grid = grid / "grid.png"
    cfg = SampleConfig(
        checkpoint=args.checkpoint,
        prompts=args.prompts,
        n=args.n,
        seed=args.seed,
        psi=args.psi,
        out_dir=str(grid.parent),
        compile=args.compile,
    )
    summary = sample_from_config(cfg, grid.name)
    print(f"{summary['images']} images in {summary['seconds']} s -> {summary['grid']}")
    return 0


if __name__ == "__main__":
    run_main(main)
