"""The training loop on the deterministic CPU path, with a tiny in-memory dataset (training_fixtures)."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from training_fixtures import FEATURE_DIM, TinyImageTextSet, tiny_config

from lafite_core import training
from lafite_core.checkpoint import checkpoint_name, latest_checkpoint, list_checkpoints, load_checkpoint
from lafite_core.conditions import mixed_conditions, standard_conditions
from lafite_core.config import DataConfig, EncoderConfig, NetworkConfig, PerturbationConfig, TrainConfig, from_dict
from lafite_core.data_stream import ResumableSampler
from lafite_core.distributed import Distributed
from lafite_core.grids import save_image_grid, seed_latents
from lafite_core.losses import LafiteLoss
from lafite_core.optimisers import ema_beta, lazy_adam
from lafite_core.params import load_params, load_yaml
from lafite_core.sampler import load_generator
from lafite_core.stats import MetricLog, loss_figure, read_metric, read_stats
from lafite_core.training import NonFiniteLossError, Trainer, train

REPO = Path(__file__).resolve().parents[1]
LOSS_TERMS = ("G_adv", "G_con_clip", "G_con_disc", "G_total", "G_pl", "D_adv", "D_con_disc", "D_total", "D_r1")


def _terms(stats):
    return [{k: v for k, v in s.items() if k in LOSS_TERMS or k in ("tick", "step", "nimg")} for s in stats]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """4 steps (2 ticks of 2 steps) in one go; several tests read its run folder."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    return train(tiny_config(run_dir), TinyImageTextSet())


# ----------------------------------------------------------------------------- run folder
def test_run_folder_holds_config_stats_grids_and_checkpoints(uninterrupted):
    run_dir = uninterrupted.run_dir
    assert uninterrupted.step == 4 and uninterrupted.nimg == 16
    resolved = load_yaml(run_dir / "config.yaml", TrainConfig)
    assert resolved.network.feature_dim == FEATURE_DIM  # read from the encoder
    assert resolved.ema_kimg == pytest.approx(4 * 10 / 32)  # official rule for batch 4
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [s["kimg"] for s in stats] == [0.008, 0.016]
    for s in stats:
        assert {"G_adv", "G_con_clip", "G_con_disc", "D_adv", "D_con_disc", "G_pl"} <= set(s)
        assert s["img_per_s"] > 0 and s["s_per_kimg"] == pytest.approx(1000 / s["img_per_s"])
        assert s["peak_mem_mb"] > 0
    assert "D_r1" in stats[0]  # R1 runs on step 0 (interval 4), not in steps 2-3
    assert "D_r1" not in stats[1]
    grid = np.asarray(Image.open(run_dir / f"samples-{16:010d}.png").convert("RGB"))
    band = (grid.shape[0] - 2 * 64) // 2  # each row: its prompt in a band, then 3 seeds at 2x
    assert grid.shape[1] == 3 * 64 and band > 5  # columns = seeds, rows = prompts
    assert (grid[band - 2, -20:] == 255).all() and (grid[:band, :60] < 128).any()  # dark text on white
    assert (run_dir / "samples-0000000000.png").is_file() and (run_dir / "reals.png").is_file()
    assert (run_dir / "loss_curves.png").is_file()
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == [checkpoint_name(8), checkpoint_name(16)]
    measured = read_metric(run_dir, "progress_clip_score")  # one line per progress grid, as it trains
    assert [m["kimg"] for m in measured] == [0.0] + [
        s["kimg"] for s in stats if (run_dir / f"samples-{s['nimg']:010d}.png").is_file()
    ]
    assert all(
        -100 <= m["results"]["progress_clip_score"] <= 100 and m["metric"] == "progress_clip_score" for m in measured
    )
    assert measured[-1]["snapshot"] == checkpoint_name(16)


def test_metric_log_writes_tensorboard_scalars_when_tensorboard_is_installed(tmp_path, monkeypatch):
    written = []

    class SummaryWriter:  # stands in for torch.utils.tensorboard's (the tensorboard package is optional)
        def __init__(self, log_dir):
            written.append(("dir", log_dir))

        def add_scalar(self, tag, value, global_step):
            written.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    log = MetricLog(tmp_path)
    log.tick({"tick": 1, "step": 4, "nimg": 16, "kimg": 0.016, "G_adv": 0.7, "img_per_s": 50.0, "peak_mem_kind": "x"})
    log.metric("progress_clip_score", 12.5, 16, "checkpoint-0000000016.pt")
    log.close()
    assert written == [
        ("dir", str(tmp_path)),
        ("Progress/kimg", 0.016, 16),
        ("Loss/G_adv", 0.7, 16),
        ("Progress/img_per_s", 50.0, 16),
        ("Metrics/progress_clip_score", 12.5, 16),
        ("closed",),
    ]
    assert read_metric(tmp_path, "progress_clip_score")[0]["results"] == {"progress_clip_score": 12.5}
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed: jsonl only
    assert MetricLog(tmp_path).tensorboard is None


def test_loss_curves_have_a_panel_per_term_with_its_own_scale(uninterrupted):
    fig = loss_figure(uninterrupted.stats)
    panels = [ax for ax in fig.axes if ax.axison]
    terms = [k for k in uninterrupted.stats[-1] if k[:2] in ("G_", "D_") and not k.endswith("_total")]
    assert [ax.get_title().split(":")[0] for ax in panels] == terms and len(terms) >= 6
    assert "unknown" not in " ".join(ax.get_title() for ax in panels)
    assert all(ax.get_xlabel() == "kimg" and ax.get_ylabel().startswith(ax.get_title().split(":")[0]) for ax in panels)
    assert "G_total" not in [ax.get_title().split(":")[0] for ax in panels]


def test_checkpoint_holds_the_full_state(uninterrupted, tmp_path):
    state = load_checkpoint(uninterrupted.last_checkpoint)
    assert {"G", "D", "G_ema", "perturbation", "G_opt", "D_opt", "pl_mean", "rng", "config", "encoder_identity"} <= set(
        state
    )
    assert (state["step"], state["nimg"], state["tick"]) == (4, 16, 2)
    assert json.loads(state["config"])["network"]["feature_dim"] == FEATURE_DIM
    assert json.loads(state["encoder_identity"])["name"] == "lafite-tiny"
    assert len(state["rng"]) == 1 and state["rng"][0]["cpu"].dtype == torch.uint8
    # G_ema is an average: it moved from the initial weights, but less than G did
    initial = Trainer(tiny_config(tmp_path), TinyImageTextSet()).G.state_dict()
    g, g_ema = state["G"], state["G_ema"]

    def moved(weights):
        return sum(float((weights[k].float() - initial[k].float()).square().sum()) for k in initial) ** 0.5

    assert 0 < moved(g_ema) < moved(g)


def test_stop_and_resume_equals_uninterrupted_run(uninterrupted, tmp_path):
    first = train(tiny_config(tmp_path, total_kimg=0.008), TinyImageTextSet())
    assert first.nimg == 8
    resumed = train(tiny_config(tmp_path), TinyImageTextSet())  # resume="auto" picks checkpoint 8
    assert resumed.step == 4 and resumed.nimg == 16
    expected, got = _terms(uninterrupted.stats), _terms(resumed.stats)
    assert [sorted(e) for e in expected] == [sorted(g) for g in got]
    for e, g in zip(expected, got):
        assert g == pytest.approx(e, rel=1e-5)
    a = load_checkpoint(uninterrupted.last_checkpoint)
    b = load_checkpoint(resumed.last_checkpoint)
    for net in ("G", "D", "G_ema"):
        for k in a[net]:
            torch.testing.assert_close(b[net][k], a[net][k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(tmp_path):
    """A training process SIGKILLed in the middle of writing its second checkpoint."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]
        from lafite_core import checkpoint, training
        from training_fixtures import TinyImageTextSet, tiny_config

        real_save = checkpoint.torch.save
        def save_then_stall(obj, f):
            if obj["nimg"] == 4:
                return real_save(obj, f)
            f.write(b"PK\\x03\\x04" + b"0" * 4096)
            f.flush()
            print("WRITING", flush=True)
            time.sleep(120)
        checkpoint.torch.save = save_then_stall
        training.train(tiny_config({str(tmp_path)!r}, total_kimg=0.008, tick_kimg=0.004), TinyImageTextSet())
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == "WRITING", f"training subprocess ended early (exit {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    ckpt_dir = tmp_path / "checkpoints"
    assert any(p.name.startswith(".tmp-") for p in ckpt_dir.iterdir())
    assert latest_checkpoint(ckpt_dir).name == checkpoint_name(4)
    trainer = Trainer(tiny_config(tmp_path, total_kimg=0.008, tick_kimg=0.004), TinyImageTextSet())
    assert (trainer.step, trainer.nimg, trainer.tick) == (1, 4, 1)  # the kimg counter continues
    assert not any(p.name.startswith(".tmp-") for p in ckpt_dir.iterdir())  # stale temporary removed
    result = trainer.run()
    assert result.nimg == 8 and [s["nimg"] for s in result.stats] == [4, 8]


def test_time_limit_stops_with_a_checkpoint_and_a_rerun_continues(tmp_path):
    first = train(tiny_config(tmp_path, max_minutes=1e-6, total_kimg=0.012), TinyImageTextSet())
    assert first.step == 1 and first.last_checkpoint.name == checkpoint_name(4)  # out of time after one step
    assert [s["nimg"] for s in first.stats] == [4]
    second = train(tiny_config(tmp_path, total_kimg=0.012), TinyImageTextSet())
    assert second.step == 3 and [s["nimg"] for s in second.stats] == [4, 12]  # ticks count from the restart


def test_load_generator_rebuilds_g_ema_from_the_checkpoint(uninterrupted):
    G, info = load_generator(uninterrupted.last_checkpoint)
    assert info["nimg"] == 16 and info["encoder_identity"]["name"] == "lafite-tiny"
    state = load_checkpoint(uninterrupted.last_checkpoint)
    assert all(torch.equal(v, state["G_ema"][k]) for k, v in G.state_dict().items())
    img = G(
        torch.randn(2, G.z_dim), torch.nn.functional.normalize(torch.randn(2, FEATURE_DIM), dim=1), noise_mode="const"
    )
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_fine_tune_starts_from_the_weights_with_fresh_counters(uninterrupted, tmp_path):
    cfg = tiny_config(tmp_path, fine_tune_from=str(uninterrupted.last_checkpoint))
    trainer = Trainer(cfg, TinyImageTextSet())
    state = load_checkpoint(uninterrupted.last_checkpoint)
    assert trainer.step == 0 and trainer.nimg == 0
    for name in ("G", "D", "G_ema"):
        for k, v in getattr(trainer, name).state_dict().items():
            assert torch.equal(v, state[name][k]), (name, k)
    assert not trainer.G_opt.state  # optimiser starts fresh


# ----------------------------------------------------------------------------- faults
def test_non_finite_loss_names_step_and_term_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    original = LafiteLoss.discriminator_main
    calls = {"n": 0}

    def poisoned(self, real, z, c):
        calls["n"] += 1
        total, terms = original(self, real, z, c)
        if calls["n"] == 3:  # the third step's D phase
            terms["D_con_disc"] = terms["D_con_disc"] * float("nan")
            total = total + terms["D_con_disc"]
        return total, terms

    monkeypatch.setattr(LafiteLoss, "discriminator_main", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*phase D: D_con_disc = nan.*checkpoint-0000000008\.pt"):
        train(tiny_config(tmp_path), TinyImageTextSet())
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == [checkpoint_name(8)]
    assert load_checkpoint(tmp_path / "checkpoints" / checkpoint_name(8))["step"] == 2


def test_cache_of_another_encoder_fails_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"parameter cache .*image_feature has 64 dimensions.*gives 128"):
        Trainer(tiny_config(run_dir), TinyImageTextSet(feature_dim=64))
    assert not run_dir.exists()


def test_an_encoder_device_other_than_the_runs_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    encoder = EncoderConfig(name="lafite-tiny", pretrained=None, device="cuda")
    with pytest.raises(ValueError, match="parameter encoder: device = 'cuda', but this run computes on cpu"):
        Trainer(tiny_config(run_dir, encoder=encoder), TinyImageTextSet())
    assert not run_dir.exists()


def test_resume_null_refuses_to_overwrite_a_run(uninterrupted):
    with pytest.raises(ValueError, match="parameter resume = null"):
        Trainer(tiny_config(uninterrupted.run_dir, resume=None), TinyImageTextSet())


def test_checkpoint_of_another_encoder_or_network_is_refused(uninterrupted, tmp_path):
    from lafite_core.checkpoint import save_checkpoint, to_json_string

    state = load_checkpoint(uninterrupted.last_checkpoint)
    state.pop("format")
    state["encoder_identity"] = to_json_string({"name": "ViT-B-32", "pretrained": "openai", "feature_dim": 512})
    foreign = save_checkpoint(state, tmp_path / "foreign", nimg=16)
    with pytest.raises(ValueError, match="parameter fine_tune_from: .*trained with encoder"):
        Trainer(tiny_config(tmp_path / "a", fine_tune_from=str(foreign)), TinyImageTextSet())
    wider = NetworkConfig(resolution=32, z_dim=32, w_dim=32, mapping_layers=2, channel_base=1024, channel_max=64)
    with pytest.raises(ValueError, match="does not fit parameter network"):
        Trainer(
            tiny_config(tmp_path / "b", network=wider, fine_tune_from=str(uninterrupted.last_checkpoint)),
            TinyImageTextSet(),
        )


# ----------------------------------------------------------------------------- settings
class _Shift(torch.nn.Module):
    """Stand-in perturbation that marks its source: image -> +10, text -> -10 on feature 0."""

    def forward(self, h, source="image"):
        out = h.clone()
        out[:, 0] += 10 if source == "image" else -10
        return out


def test_mixed_setting_picks_pseudo_features_with_probability_p():
    torch.manual_seed(0)
    n = 4000
    batch = {
        "image_feature": torch.zeros(n, 3),
        "caption_feature": torch.zeros(n, 3),
        "has_caption": torch.arange(n) % 4 != 0,
    }
    c = mixed_conditions(batch, _Shift(), 0.3)
    pseudo = c[:, 0] > 0
    assert pseudo[~batch["has_caption"]].all()  # uncaptioned images always take the pseudo feature
    assert pseudo[batch["has_caption"]].float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert (mixed_conditions(batch, _Shift(), 0.0)[:, 0] > 0).tolist() == (~batch["has_caption"]).tolist()


def test_standard_setting_uses_caption_features_and_requires_captions():
    batch = {
        "image_feature": torch.zeros(2, 3),
        "caption_feature": torch.ones(2, 3),
        "has_caption": torch.tensor([True, True]),
    }
    c = standard_conditions(batch, _Shift(), 0.5)
    assert torch.equal(c, torch.tensor([[-9.0, 1, 1], [-9.0, 1, 1]]))
    batch["has_caption"] = torch.tensor([True, False])
    with pytest.raises(ValueError, match="standard"):
        standard_conditions(batch, _Shift(), 0.5)


@pytest.mark.slow
def test_mixed_run_with_diffaugment_and_a_learned_perturbation_trained_first(tmp_path):
    cfg = tiny_config(
        tmp_path,
        setting="mixed",
        mixing_prob=0.5,
        diffaugment=["color", "translation", "cutout"],
        perturbation=PerturbationConfig(kind="learned"),
        total_kimg=0.004,
    )
    result = train(cfg, TinyImageTextSet(captioned_every=2))
    assert result.step == 1 and all(math.isfinite(v) for v in result.stats[-1].values() if isinstance(v, float))
    history = [json.loads(line) for line in (tmp_path / "learned_perturbation.jsonl").read_text().splitlines()]
    assert len(history) == 20 and all(math.isfinite(h["loss"]) for h in history)
    assert (tmp_path / "learned_perturbation.safetensors").is_file()
    state = load_checkpoint(result.last_checkpoint)
    from safetensors.torch import load_file

    trained = load_file(str(tmp_path / "learned_perturbation.safetensors"))  # the fitted net travels with the run
    assert all(torch.equal(state["perturbation"][k], v) for k, v in trained.items())
    resumed = Trainer(
        tiny_config(
            tmp_path,
            setting="mixed",
            perturbation=PerturbationConfig(kind="learned"),
            diffaugment=["color", "translation", "cutout"],
        ),
        TinyImageTextSet(captioned_every=2),
    )
    assert torch.equal(resumed.perturbation.state_dict()["mu.0.weight"], state["perturbation"]["mu.0.weight"])
    resumed.close()


def test_trains_from_a_feature_cache_and_refuses_one_of_another_dataset(tmp_path):
    from lafite_core.data import dataset_from_config
    from lafite_core.data.cache import build_cache
    from lafite_core.encoders import load_encoder

    data = DataConfig(kind="shapes", resolution=32, size=24)
    cfg = tiny_config(
        tmp_path / "run",
        data=data,
        cache=str(tmp_path / "cache"),
        setting="standard",
        perturbation=PerturbationConfig(kind="learned"),
        total_kimg=0.004,
    )
    build_cache(dataset_from_config(data), load_encoder(cfg.encoder), cfg.cache, batch_size=24, progress=False)
    result = train(cfg)  # learned perturbation fitted on the cache's 24 x 6 caption pairs, then 1 step
    assert result.step == 1 and (tmp_path / "run" / "learned_perturbation.safetensors").is_file()
    other = tiny_config(tmp_path / "run2", data=DataConfig(kind="shapes", resolution=32, size=20), cache=cfg.cache)
    with pytest.raises(ValueError, match=r"parameter cache = .*dataset fingerprint"):
        Trainer(other)
    assert not (tmp_path / "run2").exists()


@pytest.mark.slow
def test_notebook_runs_the_tiny_preset(tmp_path):
    papermill = pytest.importorskip("papermill")
    from lafite_core.data import dataset_from_config
    from lafite_core.data.cache import build_cache
    from lafite_core.encoders import load_encoder

    params = load_params(REPO / "params" / "train_tiny.yaml")
    params.update(
        encoder={"name": "lafite-tiny", "pretrained": None},
        cache=str(tmp_path / "cache"),
        run_dir=str(tmp_path / "run"),
        data={**params["data"], "size": 24},
        total_kimg=0.004,
    )
    cfg = from_dict(TrainConfig, params)
    build_cache(dataset_from_config(cfg.data), load_encoder(cfg.encoder), cfg.cache, batch_size=24, progress=False)
    papermill.execute_notebook(
        str(REPO / "notebooks" / "02_train.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={**params, "params": "params/train_tiny.yaml"},  # relative: read from the kit's home
        kernel_name="python3",
        cwd=str(REPO / "notebooks"),  # where JupyterLab starts kernels
        progress_bar=False,
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["kimg"] == 0.004 and metrics["steps"] == 1 and metrics["setting"] == "language_free"
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    train_cell = next(c for c in executed["cells"] if "result = train(cfg)" in "".join(c["source"]))
    texts = ["".join(o.get("data", {}).get("text/plain", "")) for o in train_cell["outputs"]]
    bars = [text for text in texts if "kimg" in text]
    assert len(bars) == 1 and "100%" in bars[0] and "0.004/0.004 kimg" in bars[0]  # one output, its last state
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in train_cell["outputs"])
    assert len(read_stats(tmp_path / "run")) == 1


@pytest.mark.slow
def test_mixed_precision_runs_on_cpu_in_bfloat16(tmp_path):
    """The CPU stand-in for CUDA fp16: the two highest resolutions under bf16 autocast."""
    network = NetworkConfig(
        resolution=32,
        z_dim=32,
        w_dim=32,
        mapping_layers=2,
        channel_base=512,
        channel_max=32,
        num_fp16_res=2,
        conv_clamp=256.0,
    )
    trainer = Trainer(
        tiny_config(tmp_path, network=network, mixed_precision=True, total_kimg=0.004), TinyImageTextSet()
    )
    low = [b.resolution for b in trainer.G.synthesis_network.blocks if b.use_autocast]
    assert low == [16, 32] and not any(b.use_autocast for b in trainer.G_ema.synthesis_network.blocks)
    result = trainer.run()
    assert result.step == 1
    assert all(math.isfinite(result.stats[-1][k]) for k in ("G_adv", "G_con_clip", "D_adv", "D_r1", "G_pl"))


# ----------------------------------------------------------------------------- pieces
def test_lazy_adam_correction_matches_stylegan2():
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = lazy_adam(p, 0.0025, [0.0, 0.99], reg_interval=16)
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert group["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert lazy_adam(p, 0.002, [0.0, 0.99], None).param_groups[0]["lr"] == 0.002


def test_ema_half_life():
    beta = ema_beta(batch_size=32, nimg=10_000, ema_kimg=10.0, ema_rampup=None)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    ramped = ema_beta(batch_size=32, nimg=1_000, ema_kimg=10.0, ema_rampup=0.05)  # half-life 50 images
    assert ramped ** (50 / 32) == pytest.approx(0.5)


def test_sampler_stream_is_resumable_and_split_between_processes():
    def stream(rank, world, start, steps, per_process=3):
        it = iter(ResumableSampler(10, per_process, Distributed(rank, world, torch.device("cpu")), seed=5, start=start))
        return [next(it) for _ in range(steps * per_process)]

    full = stream(0, 1, 0, 8, per_process=6)  # 48 positions = 4.8 epochs
    assert sorted(full[:10]) == list(range(10)) and sorted(full[10:20]) == list(range(10))
    assert stream(0, 1, 18, 5, per_process=6) == full[18:]  # resumed after 3 steps
    r0, r1 = stream(0, 2, 0, 8), stream(1, 2, 0, 8)
    interleaved = [i for s in range(8) for i in r0[3 * s : 3 * s + 3] + r1[3 * s : 3 * s + 3]]
    assert interleaved == full


def test_progress_grid_is_deterministic_and_leaves_the_rng_alone():
    from lafite_core.networks import Generator

    torch.manual_seed(0)
    G = Generator(
        NetworkConfig(resolution=32, z_dim=16, w_dim=16, mapping_layers=1, channel_base=256, channel_max=16), 8
    )
    z = seed_latents([3, 4], 16)
    assert torch.equal(z, seed_latents([3, 4], 16))
    c = torch.randn(2, 8)
    state = torch.get_rng_state()
    a = training.progress_grid(G, c, z)
    assert torch.equal(torch.get_rng_state(), state)  # drew nothing from the global RNG
    b = training.progress_grid(G, c, z)
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)


def test_save_image_grid_layout(tmp_path):
    images = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 1.0, 0.0)])
    save_image_grid(images, 2, tmp_path / "g.png")
    array = np.asarray(Image.open(tmp_path / "g.png"))
    assert array.shape == (8, 8, 3)
    assert array[0, 0, 0] == 0 and array[0, 4, 0] == 255 and array[4, 0, 0] == 128 and array[4, 4, 0] == 0


def test_command_line_overrides(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("batch_size: 8\nnetwork: {resolution: 32}\n")
    cfg = training.load_train_config(params, ["total_kimg=2.5", "network.z_dim=64", "diffaugment=[color]"])
    assert (cfg.batch_size, cfg.total_kimg, cfg.network.z_dim, cfg.diffaugment) == (8, 2.5, 64, ["color"])
    with pytest.raises(ValueError, match=r"p\.yaml: unknown parameter 'bogus'"):
        training.load_train_config(params, ["bogus=1"])
    with pytest.raises(ValueError, match="'total_kimg' must look like key=value"):
        training.load_train_config(params, ["total_kimg"])
    with pytest.raises(TypeError, match="parameter batch_size = 'many'"):
        training.load_train_config(None, ["batch_size=many"])
