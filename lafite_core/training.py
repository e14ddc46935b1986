"""The LAFITE training loop: language-free, standard and mixed settings on one or many processes.

One step (StyleGAN2's phases, Karras et al. 2020, with LAFITE's losses from losses.py):
  1. a batch of real images with their cached CLIP features -> conditions h' (the `setting`);
  2. G main   : L_adv + lambda_G L_ConG + lambda_D L_ConD(fake)                  (paper Eq. 7)
  3. G reg    : path-length penalty, every loss.pl_interval steps (lazy)
  4. D main   : L_adv + lambda_D L_ConD(real)                                    (paper Eq. 8)
  5. D reg    : R1 penalty, every loss.r1_interval steps (lazy)
  6. G_ema    : exponential moving average of G's weights (used for samples and evaluation).
Each phase is its own Adam step, lazily corrected for the regularisation phases (optimisers.py).
With compile: true, phases 2 and 4 call torch.compile'd G and D (compiled.py); 3 and 5 stay eager.

Scale: run `python -m lafite_core.training --params params/train.yaml` for one process, or the same
under `torchrun --nproc_per_node N` (and `--nnodes` ...): the process group is detected from the
environment (RANK, WORLD_SIZE, LOCAL_RANK), nccl on CUDA, gloo on CPU. Gradients are averaged with
one all-reduce per phase (explicit, like StyleGAN2-ADA, rather than a DDP wrapper, because the loss
calls G.mapping / G.synthesis directly), so every process keeps identical weights.

Reproducibility: the data order is a pure function of (seed, images seen) (data_stream.py) and
every process's RNG state goes into the checkpoints, so on the CPU path training k steps, stopping
and resuming gives the same numbers as an uninterrupted run (exact with num_workers = 0; the same
number of processes).

Run folder (cfg.run_dir): config.yaml (the resolved config), run.json (environment), stats.jsonl
(one line per tick: every loss term, kimg, img/s, s/kimg, peak memory), samples-<nimg>.png (G_ema at
fixed prompts x seeds), reals.png, loss_curves.png, checkpoints/checkpoint-<nimg>.pt (last N).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml

from lafite_core import checkpoint as ckpt
from lafite_core.augment import AugmentedDiscriminator
from lafite_core.conditions import SETTINGS, GatheredNegativesLoss
from lafite_core.config import PRESET_KEY, TrainConfig, to_dict
from lafite_core.data import dataset_from_config
from lafite_core.data.cache import CachedImageTextSet, encoder_differences, load_cache
from lafite_core.data_stream import batch_stream, to_device
from lafite_core.distributed import (
    all_gather,
    average_buffers,
    average_gradients,
    broadcast_from_main,
    broadcast_module,
    close_distributed,
    init_distributed,
    mean_over_processes,
)
from lafite_core.encoders import load_encoder
from lafite_core.grids import from_uint8, save_grid, save_image_grid, seed_latents
from lafite_core.losses import LafiteLoss, compiled_passes
from lafite_core.networks import Discriminator, Generator, resolve_feature_dim
from lafite_core.optimisers import ema_beta, lazy_adam, update_ema
from lafite_core.params import (
    INPUT_ERRORS,
    OneLineError,
    add_params_arguments,
    command_parser,
    load_with_overrides,
    run_main,
)
from lafite_core.perturbations import build_perturbation, save_learned_perturbation, train_learned_perturbation
from lafite_core.progress import tqdm
from lafite_core.run_lock import RunLock
from lafite_core.stats import MetricLog, TickStats, peak_memory_mb, plot_stats, read_stats
from lafite_core.tensor_files import judge_weights_file

Tensor = torch.Tensor
PROGRESS_SCALE = 2  # progress grids are enlarged so each row's prompt fits above it


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the step, the phase and the term."""


class TrainingInterrupted(OneLineError, KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint; rerunning resumes."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(
            f"training stopped by {signal.Signals(signum).name}; checkpoint {checkpoint}; "
            "run it again with the same run_dir to resume"
        )
        self.signum, self.checkpoint = signum, checkpoint


class StopSignals:
    """SIGINT and SIGTERM during the loop ask for a stop at the end of the step (so a checkpoint
    can be written) instead of killing the process mid-write; a second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handlers in place for the block (only the main thread may set them; elsewhere none)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in self.SIGNALS}
        for s in self.SIGNALS:
            signal.signal(s, self._handle)
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


# =============================================================================================
# Progress grids


@torch.no_grad()
def progress_grid(G: torch.nn.Module, prompt_features: Tensor, z: Tensor, batch: int = 32) -> Tensor:
    """G(z_j, text feature of prompt i) for every (prompt, seed): rows = prompts, columns = seeds.
    Deterministic (constant noise), and it draws nothing from the global RNG."""
    device = prompt_features.device
    c = prompt_features.repeat_interleave(len(z), dim=0)
    zs = z.to(device).repeat(len(prompt_features), 1)
    return torch.cat(
        [G(zs[i : i + batch], c[i : i + batch], noise_mode="const").cpu() for i in range(0, len(zs), batch)]
    )


# =============================================================================================
# The trainer


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    nimg: int
    last_checkpoint: Path | None
    stats: list[dict] = field(default_factory=list)


class Trainer:
    """Builds everything from a TrainConfig (validating before any work) and runs the loop.

    `dataset` overrides the cached dataset named by cfg.data / cfg.cache: any map-style dataset
    whose items are dicts with image [3, R, R] in [-1, 1], image_feature [f], caption_feature [f],
    has_caption and index (tests use a small in-memory one).
    """

    def __init__(self, cfg: TrainConfig, dataset: torch.utils.data.Dataset | None = None):
        self.dist = init_distributed(cfg.device)
        self.lock: RunLock | None = None
        try:
            self._setup(cfg, dataset)
        except BaseException:
            if self.lock is not None:  # a run that failed before writing anything leaves no folder
                self.lock.release(remove_created=True)
            self.close()
            raise

    # ------------------------------------------------------------------------------- setup
    def _setup(self, cfg: TrainConfig, dataset) -> None:

        dist = self.dist
        if cfg.batch_size % dist.world_size:
            raise ValueError(
                f"parameter batch_size = {cfg.batch_size} must be a multiple of the "
                f"number of processes ({dist.world_size})"
            )
        self.batch_per_process = cfg.batch_size // dist.world_size
        self.run_dir = Path(cfg.run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.stop = StopSignals()
        if dist.is_main:  # one writer per run folder; the other ranks write nothing there
            self.lock = RunLock(self.run_dir, "training").acquire()
        resume_path = self._resume_path(cfg)
        if resume_path is None and cfg.fine_tune_from is not None:  # a bad file fails before any loading
            judge_weights_file(cfg.fine_tune_from, "fine_tune_from")

        torch.manual_seed(cfg.seed)  # a randomly initialised encoder (tests) is the same in every run
        # the encoder runs where training runs (under torchrun: this process's GPU)
        try:
            self.encoder = load_encoder(cfg.encoder, run_device=dist.device)
        except ValueError as err:
            raise ValueError(f"parameter encoder: {err}") from None
        f = resolve_feature_dim(cfg.network, self.encoder.feature_dim)  # a feature_dim in the params must agree
        self.dataset = dataset if dataset is not None else self._cached_dataset(cfg)
        self._check_dataset(cfg, f)

        cfg = dataclasses.replace(
            cfg,
            network=dataclasses.replace(cfg.network, feature_dim=f),
            ema_kimg=cfg.ema_kimg if cfg.ema_kimg is not None else cfg.batch_size * 10 / 32,
        )
        self.cfg = cfg

        self._build_models(cfg, f)
        self.conditions = SETTINGS.get(cfg.setting)

        self.step = self.nimg = self.tick = 0
        self.last_checkpoint: Path | None = None
        rng_states = None
        if resume_path is not None:
            rng_states = self._load_state(resume_path)
            self.last_checkpoint = resume_path
            if dist.is_main:
                print(f"resumed from {resume_path} at {self.nimg / 1000:g} kimg", flush=True)
            if dist.is_main and self.nimg >= cfg.total_kimg * 1000:
                print(
                    f"warning: parameter total_kimg = {cfg.total_kimg} is not above the progress of "
                    f"checkpoint {resume_path} ({self.nimg / 1000:g} kimg): nothing left to train; "
                    f"raise total_kimg to continue this run",
                    file=sys.stderr,
                    flush=True,
                )
        else:
            if cfg.fine_tune_from is not None:
                self._load_weights(Path(cfg.fine_tune_from))
            if self._needs_perturbation_training():
                self._train_perturbation()
        for module in (self.G, self.D, self.G_ema, self.perturbation):
            broadcast_module(module, dist)

        if dist.is_main:
            self._prepare_run_dir(resume_path)
        self.prompt_features = self.encoder.encode_text(cfg.progress_prompts)
        self.grid_z = seed_latents(cfg.progress_seeds, cfg.network.z_dim)

        # From here on the global RNG drives training: seed it per process, build the data stream
        # (the loader draws a seed), then put back the saved state when resuming.
        torch.manual_seed(cfg.seed * 65_536 + dist.rank)
        self.batches = batch_stream(self.dataset, self.batch_per_process, dist, cfg.seed, self.nimg, cfg.num_workers)
        if rng_states is not None:
            self._restore_rng(rng_states)

    def _build_models(self, cfg: TrainConfig, f: int) -> None:
        """G, D, G_ema, the perturbation, the loss and the two (lazily corrected) optimisers."""

        device = self.dist.device
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        self.G = Generator(cfg.network, f).to(device).train()
        self.D = Discriminator(cfg.network, f).to(device).train()
        self.G.set_mixed_precision(cfg.mixed_precision)
        self.D.set_mixed_precision(cfg.mixed_precision)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.G_ema.set_mixed_precision(False)  # samples and evaluation in full precision
        self.perturbation = build_perturbation(cfg.perturbation, f).to(device).requires_grad_(False)

        D_seen = AugmentedDiscriminator(self.D, cfg.diffaugment) if cfg.diffaugment else self.D
        main = compiled_passes(self.G, D_seen, cfg.compile)
        if cfg.gather_negatives and self.dist.world_size > 1:
            self.loss = GatheredNegativesLoss(self.G, D_seen, self.encoder, cfg.loss, self.dist, main)
        else:
            self.loss = LafiteLoss(self.G, D_seen, self.encoder, cfg.loss, main)
        self.pl_enabled = cfg.loss.pl_weight > 0
        self.r1_enabled = cfg.loss.r1_gamma > 0
        pl_interval = cfg.loss.pl_interval if self.pl_enabled else None
        r1_interval = cfg.loss.r1_interval if self.r1_enabled else None
        self.G_opt = lazy_adam(self.G.parameters(), cfg.g_lr, cfg.betas, pl_interval)
        self.D_opt = lazy_adam(self.D.parameters(), cfg.d_lr, cfg.betas, r1_interval)

    def _resume_path(self, cfg: TrainConfig) -> Path | None:
        existing = ckpt.latest_checkpoint(self.checkpoint_dir)
        if cfg.resume == "auto":
            return existing
        if cfg.resume is None:
            if existing is not None:
                raise ValueError(
                    f"parameter resume = null, but {self.checkpoint_dir} already holds checkpoints "
                    f"(newest {existing.name}); set resume: auto to continue or pick another run_dir"
                )
            return None
        path = Path(cfg.resume)
        if not path.is_file():
            raise FileNotFoundError(f"parameter resume = {cfg.resume!r}: no such checkpoint file")
        return judge_weights_file(path, "resume")

    def _cached_dataset(self, cfg: TrainConfig):

        images = dataset_from_config(cfg.data)
        try:
            cache = load_cache(
                cfg.cache, encoder_identity=self.encoder.identity(), dataset_fingerprint=images.fingerprint()
            )
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"parameter cache = {cfg.cache!r}: {err}") from err
        return CachedImageTextSet(images, cache, xflip=cfg.xflip)

    def _check_dataset(self, cfg: TrainConfig, feature_dim: int) -> None:
        """Feature size and image size must fit the encoder and the networks."""
        if len(self.dataset) < self.batch_per_process:
            raise ValueError(f"parameter batch_size = {cfg.batch_size}: the dataset has only {len(self.dataset)} items")
        item = self.dataset[0]
        for key in ("image_feature", "caption_feature"):
            if item[key].shape[-1] != feature_dim:
                raise ValueError(
                    f"parameter cache = {cfg.cache!r}: {key} has {item[key].shape[-1]} dimensions, "
                    f"the encoder {cfg.encoder.name!r} gives {feature_dim}"
                )
        expected = (cfg.network.img_channels, cfg.network.resolution, cfg.network.resolution)
        if tuple(item["image"].shape) != expected:
            raise ValueError(
                f"parameter data.resolution: images have shape {tuple(item['image'].shape)}, "
                f"the networks expect {expected}"
            )
        if cfg.setting != "language_free" and _captioned_items(self.dataset) == 0:
            raise ValueError(
                f"parameter setting = {cfg.setting!r} needs captions; the dataset has none (use 'language_free')"
            )
        if cfg.setting == "standard" and _captioned_items(self.dataset) < len(self.dataset):
            raise ValueError(
                "parameter setting = 'standard' needs a caption for every image; "
                "this dataset has uncaptioned images (use 'mixed' or 'language_free')"
            )

    def _prepare_run_dir(self, resume_path: Path | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temporaries(self.checkpoint_dir)
        resolved = to_dict(self.cfg)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        (self.run_dir / "config.json").write_text(json.dumps(resolved, indent=2))
        info = {
            "world_size": self.dist.world_size,
            "device": str(self.dist.device),
            "device_name": (
                torch.cuda.get_device_name(self.dist.device)
                if self.dist.device.type == "cuda"
                else platform.processor() or platform.machine()
            ),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "encoder": self.encoder.identity(),
            "dataset_items": len(self.dataset),
            "parameters": {"G": _count(self.G), "D": _count(self.D)},
            "resumed_from": str(resume_path) if resume_path else None,
            "resumed_at_kimg": self.nimg / 1000 if resume_path else None,
        }
        (self.run_dir / "run.json").write_text(json.dumps(info, indent=2))
        stats = self.run_dir / "stats.jsonl"
        if resume_path is None:
            stats.write_text("")
            self._write_reals()
        else:  # drop ticks logged after the checkpoint (a killed run's last ones): they are redone
            kept = [s for s in read_stats(self.run_dir) if s["nimg"] <= self.nimg]
            stats.write_text("".join(json.dumps(s) + "\n" for s in kept))

    def _write_reals(self) -> None:
        n = min(len(self.dataset), 4 * len(self.cfg.progress_seeds))
        reals = torch.stack([from_uint8(self.dataset[i]["image"]) for i in range(n)])
        save_image_grid(reals, len(self.cfg.progress_seeds), self.run_dir / "reals.png")

    # ----------------------------------------------------------------- learned perturbation
    def _needs_perturbation_training(self) -> bool:
        return self.cfg.perturbation.kind == "learned" and self.cfg.perturbation.learned_weights is None

    def _train_perturbation(self) -> None:
        """Fit the learned perturbation on paired features, then freeze it (perturbations.py has
        the objective: symmetric InfoNCE between h' and the caption feature + KL on the noise)."""

        pcfg = self.cfg.perturbation_training
        images, captions = self._paired_features(pcfg.paired_cache)
        if self.dist.is_main:  # trained once, then broadcast
            self.perturbation.requires_grad_(True)
            history = train_learned_perturbation(
                self.perturbation,
                images,
                captions,
                steps=pcfg.steps,
                batch_size=min(pcfg.batch_size, len(images)),
                lr=pcfg.lr,
                temperature=pcfg.temperature,
                kl_weight=pcfg.kl_weight,
                seed=self.cfg.seed,
            )
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_learned_perturbation(self.perturbation, self.run_dir / "learned_perturbation.safetensors")
            with open(self.run_dir / "learned_perturbation.jsonl", "w") as log:
                log.writelines(json.dumps(h) + "\n" for h in history)
        self.perturbation.requires_grad_(False).eval()

    def _paired_features(self, paired_cache: str | None) -> tuple[Tensor, Tensor]:
        """(image feature, caption feature) for every caption of the paired set: another cache
        folder, else the training cache (or, for an in-memory dataset, its captioned items)."""

        if paired_cache is not None:
            try:
                cache = load_cache(paired_cache, encoder_identity=self.encoder.identity())
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(f"parameter perturbation_training.paired_cache = {paired_cache!r}: {err}") from err
        else:
            cache = getattr(self.dataset, "cache", None)
        if cache is not None:
            images = torch.from_numpy(np.asarray(cache.image_features, dtype=np.float32)[cache.caption_item])
            captions = torch.from_numpy(np.asarray(cache.caption_features, dtype=np.float32))
        else:
            items = [it for it in (self.dataset[i] for i in range(len(self.dataset))) if bool(it["has_caption"])]
            images = torch.stack([it["image_feature"] for it in items]) if items else torch.zeros(0)
            captions = torch.stack([it["caption_feature"] for it in items]) if items else torch.zeros(0)
        if len(images) < 2:
            raise ValueError(
                "perturbation_training needs at least 2 captions in the paired set "
                f"(found {len(images)}); set perturbation_training.paired_cache to a captioned cache"
            )
        return images.float(), captions.float()

    # ------------------------------------------------------------------------------- state
    def state_dict(self, rng_states: list[dict]) -> dict[str, Any]:
        return {
            "config": ckpt.to_json_string(to_dict(self.cfg)),
            "encoder_identity": ckpt.to_json_string(self.encoder.identity()),
            "G": ckpt.module_state(self.G),
            "D": ckpt.module_state(self.D),
            "G_ema": ckpt.module_state(self.G_ema),
            "perturbation": ckpt.module_state(self.perturbation),
            "G_opt": self.G_opt.state_dict(),
            "D_opt": self.D_opt.state_dict(),
            "pl_mean": self.loss.pl_mean.detach().cpu().clone(),
            "step": self.step,
            "nimg": self.nimg,
            "tick": self.tick,
            "world_size": self.dist.world_size,
            "rng": rng_states,
        }

    def _check_encoder(self, state: dict, path: Path, parameter: str) -> None:
        theirs = ckpt.from_json_string(state["encoder_identity"])
        ours = self.encoder.identity()
        if encoder_differences(theirs, ours):  # the same weights under another path are the same encoder
            raise ValueError(
                f"parameter {parameter}: {path} was trained with encoder {theirs}, "
                f"this run uses {ours}; conditions would live in different feature spaces"
            )

    def _load_modules(self, state: dict, path: Path, names: tuple[str, ...]) -> None:
        for name in names:
            try:
                getattr(self, name).load_state_dict(state[name])
            except RuntimeError as err:
                raise ValueError(
                    f"{path}: its {name} does not fit parameter network = {self.cfg.network} "
                    f"({str(err).splitlines()[0]})"
                ) from None

    def _load_state(self, path: Path) -> list[dict]:
        """Continue a run: every weight, optimiser moment, counter and RNG state."""
        state = ckpt.load_checkpoint(path, map_location=self.dist.device, parameter="resume")
        self._check_encoder(state, path, "resume")
        self._load_modules(state, path, ("G", "D", "G_ema", "perturbation"))
        self.G_opt.load_state_dict(state["G_opt"])
        self.D_opt.load_state_dict(state["D_opt"])
        self.loss.pl_mean = state["pl_mean"].to(self.dist.device)
        self.step, self.nimg, self.tick = state["step"], state["nimg"], state["tick"]
        return state["rng"]

    def _load_weights(self, path: Path) -> None:
        """Fine-tuning: G, D and G_ema from another run; optimisers and counters start fresh."""
        state = ckpt.load_checkpoint(path, map_location=self.dist.device, parameter="fine_tune_from")
        self._check_encoder(state, path, "fine_tune_from")
        self._load_modules(state, path, ("G", "D", "G_ema"))

    def _gather_rng(self) -> list[dict]:
        """Every process's RNG state (collective: all processes call it)."""
        state = ckpt.capture_rng(self.dist.device)
        if self.dist.world_size == 1:
            return [state]
        gathered = {
            k: all_gather(v.to(self.dist.device) if self.dist.device.type == "cuda" else v, self.dist)
            for k, v in state.items()
        }
        return [{k: v[r].cpu() for k, v in gathered.items()} for r in range(self.dist.world_size)]

    def _restore_rng(self, states: list[dict]) -> None:
        if len(states) == self.dist.world_size:
            ckpt.restore_rng(states[self.dist.rank], self.dist.device)
        else:  # a different number of processes: continue, but with a fresh stream per process
            torch.manual_seed(self.cfg.seed * 65_536 + self.dist.rank + 7919 * self.step)
            if self.dist.is_main:
                print(
                    f"resuming {len(states)}-process checkpoint on {self.dist.world_size} processes: "
                    f"data order is kept, random draws are not",
                    flush=True,
                )

    def save(self) -> Path | None:
        """Checkpoint now (collective: every process contributes its RNG state; rank 0 writes)."""
        rng = self._gather_rng()
        if self.dist.is_main:
            ckpt.save_checkpoint(self.state_dict(rng), self.checkpoint_dir, self.nimg, keep_last=self.cfg.keep_last)
        self.last_checkpoint = self.checkpoint_dir / ckpt.checkpoint_name(self.nimg)
        return self.last_checkpoint

    # -------------------------------------------------------------------------------- loop
    def _phase(
        self,
        name: str,
        module: torch.nn.Module,
        other: torch.nn.Module,
        opt: torch.optim.Optimizer,
        compute: Callable[[], tuple[Tensor, dict]],
    ) -> dict[str, float]:
        """One optimiser step of `module` on the loss from `compute`, with `other` frozen."""
        module.requires_grad_(True)
        other.requires_grad_(False)
        opt.zero_grad(set_to_none=True)
        total, terms = compute()
        values = self._reduced_values({**terms, f"{name}_total": total})
        for term, value in values.items():
            if not math.isfinite(value):
                where = self.last_checkpoint or "none (no checkpoint written yet)"
                raise NonFiniteLossError(
                    f"non-finite loss at step {self.step} (kimg {self.nimg / 1000:.3f}), phase {name}: "
                    f"{term} = {value}. Training stopped; the last good checkpoint is {where}"
                )
        total.backward()
        average_gradients(module, self.dist, sanitize=self.cfg.mixed_precision)
        opt.step()
        module.requires_grad_(False)
        return values

    def _reduced_values(self, terms: dict[str, Tensor]) -> dict[str, float]:
        """Loss terms as floats, averaged over processes (so all of them see the same NaN)."""
        values = mean_over_processes(torch.stack([t.detach().float().reshape([]) for t in terms.values()]), self.dist)
        return dict(zip(terms, values.tolist()))

    def _draw_conditions(self, batch: dict) -> Tensor:
        with torch.no_grad():
            return self.conditions(batch, self.perturbation, self.cfg.mixing_prob).float()

    def train_step(self, batch: dict) -> dict[str, float]:
        """All phases of one step on one batch; returns the loss terms it computed."""
        cfg, device, n = self.cfg, self.dist.device, self.batch_per_process
        batch = to_device(batch, device)
        real = from_uint8(batch["image"])
        c = self._draw_conditions(batch)

        def conditions() -> Tensor:
            """c again, or a new draw under perturbation.redraw = per_phase (the authors' code)."""
            return self._draw_conditions(batch) if cfg.perturbation.redraw == "per_phase" else c

        z_dim = cfg.network.z_dim
        terms: dict[str, float] = {}
        terms |= self._phase(
            "G", self.G, self.D, self.G_opt, lambda: self.loss.generator_main(torch.randn(n, z_dim, device=device), c)
        )
        if self.pl_enabled and self.step % cfg.loss.pl_interval == 0:
            terms |= self._phase(
                "G_reg",
                self.G,
                self.D,
                self.G_opt,
                lambda: self.loss.generator_path_length(torch.randn(n, z_dim, device=device), conditions()),
            )
        terms |= self._phase(
            "D",
            self.D,
            self.G,
            self.D_opt,
            lambda: self.loss.discriminator_main(real, torch.randn(n, z_dim, device=device), conditions()),
        )
        if self.r1_enabled and self.step % cfg.loss.r1_interval == 0:
            terms |= self._phase(
                "D_reg", self.D, self.G, self.D_opt, lambda: self.loss.discriminator_r1(real, conditions())
            )
        average_buffers(self.G, self.dist)
        self.nimg += cfg.batch_size
        self.step += 1
        update_ema(self.G_ema, self.G, ema_beta(cfg.batch_size, self.nimg, cfg.ema_kimg, cfg.ema_rampup))
        return terms

    def run(self) -> TrainResult:
        """Train until cfg.total_kimg, logging a tick every cfg.tick_kimg; always close the group.
        SIGINT or SIGTERM ends the step, writes a checkpoint and raises TrainingInterrupted."""
        try:
            with self.stop.installed():
                result = self._run()
            if self.stop.signum is not None and self.nimg < self.cfg.total_kimg * 1000:
                raise TrainingInterrupted(self.stop.signum, self.last_checkpoint)
            return result
        finally:
            self.close()

    def _run(self) -> TrainResult:
        cfg, dist = self.cfg, self.dist
        total_nimg = int(round(cfg.total_kimg * 1000))
        bar = None
        if dist.is_main:
            self.metrics = MetricLog(self.run_dir)
            bar = tqdm(
                total=cfg.total_kimg,
                initial=min(self.nimg / 1000, cfg.total_kimg),  # a resume past total_kimg warned already
                unit="kimg",
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
            )
            if self.tick == 0 and self.nimg == 0:
                self._write_samples()
        tick_start_nimg, stats = self.nimg, TickStats()
        tick_start_time = run_start_time = time.time()
        train_seconds = 0.0
        if dist.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dist.device)
        done = self.nimg >= total_nimg
        while not done:
            batch = next(self.batches)
            started = time.time()
            terms = self.train_step(batch)
            if dist.device.type == "cuda":
                torch.cuda.synchronize(dist.device)
            train_seconds += time.time() - started
            stats.add(terms)
            if bar is not None:
                bar.update(cfg.batch_size / 1000)
                shown = [k for k in ("G_total", "D_total", "G_con_clip") if k in terms]
                bar.set_postfix_str(" ".join(f"{k}={terms[k]:.3f}" for k in shown))
            done = self.nimg >= total_nimg or self._should_stop(run_start_time)
            if not done and self.nimg < tick_start_nimg + cfg.tick_kimg * 1000:
                continue
            self.tick += 1
            images = self.nimg - tick_start_nimg
            line = {
                "tick": self.tick,
                "step": self.step,
                "nimg": self.nimg,
                "kimg": self.nimg / 1000,
                **{k: round(v, 6) for k, v in stats.means().items()},
                "img_per_s": images / max(train_seconds, 1e-9),
                "s_per_kimg": train_seconds / max(images / 1000, 1e-9),
                "sec_per_tick": time.time() - tick_start_time,
            }
            line["peak_mem_mb"], line["peak_mem_kind"] = peak_memory_mb(dist.device)
            if done or self.tick % cfg.snapshot_ticks == 0:
                self.save()
            if dist.is_main:
                with open(self.run_dir / "stats.jsonl", "a") as log:
                    log.write(json.dumps(line) + "\n")
                self.metrics.tick(line)
                if done or self.tick % cfg.image_ticks == 0:
                    self._write_samples()
            tick_start_nimg, stats, tick_start_time, train_seconds = self.nimg, TickStats(), time.time(), 0.0
            if dist.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dist.device)
        if bar is not None:
            bar.close()
        if dist.is_main:
            plot_stats(self.run_dir)
            self.metrics.close()
        return TrainResult(
            self.run_dir, self.step, self.nimg, self.last_checkpoint, read_stats(self.run_dir) if dist.is_main else []
        )

    def _should_stop(self, started: float) -> bool:
        """cfg.max_minutes passed, or a stop signal came? Rank 0 decides for every process."""
        over = self.stop.signum is not None or (
            self.cfg.max_minutes is not None and time.time() - started > self.cfg.max_minutes * 60
        )
        if self.dist.world_size == 1:  # no device tensor, so no host-device sync on every step
            return over
        return bool(broadcast_from_main(torch.tensor(float(over), device=self.dist.device), self.dist).item())

    def _write_samples(self) -> None:
        """The progress grid, and how well it follows its prompts: 100 x the mean cosine between each
        image's CLIP feature and its prompt's (metric-progress_clip_score.jsonl), a number to follow
        while the run trains."""
        images = progress_grid(self.G_ema, self.prompt_features, self.grid_z)
        with torch.no_grad():
            image_features = self.encoder.encode_image(images.to(self.prompt_features.device))
        prompts = self.prompt_features.repeat_interleave(len(self.grid_z), dim=0)
        score = 100 * torch.nn.functional.cosine_similarity(image_features, prompts).mean().item()
        snapshot = self.last_checkpoint.name if self.last_checkpoint else None
        self.metrics.metric("progress_clip_score", round(score, 4), self.nimg, snapshot)
        save_grid(  # rows = progress prompts, labelled; columns = seeds
            images,
            self.run_dir / f"samples-{self.nimg:010d}.png",
            len(self.cfg.progress_seeds),
            captions=self.cfg.progress_prompts,
            scale=PROGRESS_SCALE,
        )

    def close(self) -> None:
        close_distributed(self.dist)
        if self.lock is not None:
            self.lock.release()


def _captioned_items(dataset) -> int:
    """How many items have at least one caption (from the cache index, without reading images)."""
    cache = getattr(dataset, "cache", None)
    if cache is not None:
        return len(np.unique(np.asarray(cache.caption_item)))
    has_caption = getattr(dataset, "has_caption", None)
    if has_caption is not None:
        return int(torch.as_tensor(has_caption).sum())
    return sum(bool(dataset[i]["has_caption"]) for i in range(len(dataset)))


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def train(cfg: TrainConfig, dataset: torch.utils.data.Dataset | None = None) -> TrainResult:
    """Train LAFITE as configured; see the module docstring for what lands in cfg.run_dir."""
    return Trainer(cfg, dataset).run()


# =============================================================================================
# Command line (also the torchrun entry point)


def load_train_config(params: str | Path | None, overrides: list[str], preset: str | None = None) -> TrainConfig:
    """A preset (TrainConfig.PRESETS; it replaces one the params file names), then a params file
    (with `extends`), then `key.sub=value` overrides (values parsed as YAML)."""
    return load_with_overrides(TrainConfig, params, overrides, {PRESET_KEY: preset} if preset else None)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("train", "Train LAFITE (one process, or several under torchrun).")
    parser.add_argument(
        "--preset",
        choices=sorted(TrainConfig.PRESETS),
        metavar="NAME",
        help="start from this named recipe (TrainConfig.PRESETS; default: the params file's, else shapes32): "
        + ", ".join(TrainConfig.PRESETS),
    )
    add_params_arguments(parser, "TrainConfig", "total_kimg=10 --set network.resolution=64")
    args = parser.parse_args(argv)
    cfg = load_train_config(args.params, args.overrides, args.preset)
    try:
        result = train(cfg)
    except TrainingInterrupted as stop:
        print(f"interrupted: {stop} (the same command)", file=sys.stderr, flush=True)
        return 128 + stop.signum
    if result.stats:
        last = result.stats[-1]
        print(
            f"done: {result.nimg / 1000:.3f} kimg, {last['img_per_s']:.1f} img/s, checkpoint {result.last_checkpoint}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    run_main(main, errors=(*INPUT_ERRORS, NonFiniteLossError))
