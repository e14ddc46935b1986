"""Reliability: two writers on one folder, a runner stopped by a signal, bad inputs caught before
any work with a one-line error, and what the kit cuts (small images, huge grids) said out loud."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import psutil
import pytest
import torch
from encoder_fakes import CountingEncoder
from PIL import Image
from training_fixtures import TinyImageTextSet, tiny_config

from lafite_core import grids, runner, training
from lafite_core.config import EncoderConfig, EvalConfig
from lafite_core.data import build_dataset
from lafite_core.data.cache import CacheMismatchError, build_cache
from lafite_core.encoders import load_encoder
from lafite_core.evaluation import evaluate
from lafite_core.params import INPUT_ERRORS, run_main
from lafite_core.perturbations import load_learned_perturbation
from lafite_core.run_lock import FolderLockedError, RunLock
from lafite_core.training import Trainer, TrainingInterrupted, train

pytestmark = pytest.mark.slow  # signals to subprocesses, trainings stopped and resumed

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
HOLD_LOCK = "import sys, time; from lafite_core.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s lock (a light stand-in for a second writer)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def gone(pids: list[int]) -> list[int]:
    """The pids of `pids` still alive (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


# ------------------------------------------------------------------------------------ the lock
def test_a_second_training_on_one_folder_fails_at_once_and_the_first_finishes_intact(tmp_path):
    run_dir = tmp_path / "run"
    first = Trainer(tiny_config(run_dir), TinyImageTextSet())  # holds the lock from set-up on
    second = subprocess.run(
        [sys.executable, "-m", "lafite_core.training", "--set", f"run_dir={run_dir}", "--set", "seed=7"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2
    assert second.stderr.startswith("error: ") and "Traceback" not in second.stderr
    assert f"in use by another training (pid {os.getpid()}" in second.stderr
    with pytest.raises(FolderLockedError, match="this process itself"):  # a notebook cell run twice
        Trainer(tiny_config(run_dir), TinyImageTextSet())
    result = first.run()
    ticks = [json.loads(line)["tick"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert ticks == [1, 2]  # every tick once: nobody else wrote here
    assert "seed: 0" in (run_dir / "config.yaml").read_text()
    assert result.last_checkpoint.is_file()
    RunLock(run_dir).acquire().release()  # released when the run ended


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = hold_lock(tmp_path / "run")
    with pytest.raises(FolderLockedError, match=f"pid {holder.pid} on "):
        RunLock(tmp_path / "run", "training").acquire()
    holder.kill()  # kill -9
    holder.wait()
    result = train(tiny_config(tmp_path / "run"), TinyImageTextSet())
    assert result.nimg >= 16


def test_embedding_and_evaluation_refuse_a_folder_in_use(tmp_path):
    holder = hold_lock(tmp_path / "busy")
    try:
        with pytest.raises(FolderLockedError, match="another embedding"):
            build_cache(TinyImageTextSet(), None, tmp_path / "busy")
        with pytest.raises(FolderLockedError, match="another evaluation"):
            evaluate(EvalConfig(output_dir=str(tmp_path / "busy")))
    finally:
        holder.kill()
        holder.wait()


def test_a_runner_skips_a_run_folder_another_runner_holds(tmp_path):
    spec = runner.RunSpec(str(write_notebook(tmp_path / "nb.ipynb", "pass")), {}, sweep="t")
    holder = hold_lock(runner.run_dir(spec, tmp_path / "results"))
    try:
        [outcome] = runner.run_all([spec], tmp_path / "results", workers=1)
    finally:
        holder.kill()
        holder.wait()
    assert outcome["status"] == "locked" and f"pid {holder.pid}" in outcome["error"]
    assert not (runner.run_dir(spec, tmp_path / "results") / "status.json").exists()  # left to its holder


# --------------------------------------------------------------------------------- signals
def write_notebook(path: Path, body: str) -> Path:
    """A notebook bound to SampleConfig (all defaults valid, output out_dir) running `body`."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('out_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.metadata["lafite"] = {"config": "SampleConfig", "output": "out_dir"}
    nbformat.write(nb, path)
    return path


SLEEPER = (
    "import os, pathlib, time\n"
    "pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
    "(pathlib.Path(out_dir) / 'pid').write_text(str(os.getpid()))\n"
    "time.sleep(600)\n"
)


@pytest.mark.parametrize(
    "signum, whole_group, code",
    [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)],  # `kill PID`; Ctrl-C in a terminal
    ids=["sigterm-to-runner", "ctrl-c-to-group"],
)
def test_a_signal_to_the_runner_stops_every_run_and_records_it_interrupted(tmp_path, signum, whole_group, code):
    nb = write_notebook(tmp_path / "sleep.ipynb", SLEEPER)
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "lafite_core.runner", "run", str(nb), "--results", str(results)]
    proc = subprocess.Popen(cmd, env=ENV, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    [spec] = [runner.RunSpec(notebook=str(nb), params={})]
    folder = runner.run_dir(spec, results)
    deadline = time.monotonic() + 120
    while not (folder / "out" / "pid").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    kernel = int((folder / "out" / "pid").read_text())
    family = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    assert kernel in family
    if whole_group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    assert proc.wait(timeout=60) == code, proc.stdout.read().decode()[-2000:]
    assert gone(family) == []  # no run process outlives the runner
    status = runner.read_status(folder)
    assert status["status"] == "interrupted"
    assert status["error"] == f"stopped by {signal.Signals(signum).name}; run again to resume"
    assert runner.pending([spec], results) == [spec]  # a rerun picks it up again


def test_training_stops_on_sigterm_with_a_checkpoint_and_a_rerun_resumes(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "run", total_kimg=0.032)
    original = Trainer.train_step

    def step_then_sigterm(self, batch):
        terms = original(self, batch)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return terms

    monkeypatch.setattr(Trainer, "train_step", step_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stop:
        train(cfg, TinyImageTextSet())
    assert stop.value.signum == signal.SIGTERM
    assert stop.value.checkpoint.name == "checkpoint-0000000008.pt" and stop.value.checkpoint.is_file()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is only there while training
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed = train(cfg, TinyImageTextSet())
    assert resumed.nimg == 32
    assert [s["nimg"] for s in resumed.stats] == [8, 16, 24, 32]


def test_a_resume_below_the_checkpoint_warns(tmp_path, capsys):
    train(tiny_config(tmp_path / "run"), TinyImageTextSet())
    capsys.readouterr()
    result = train(tiny_config(tmp_path / "run", total_kimg=0.008), TinyImageTextSet())
    assert result.nimg == 16
    err = capsys.readouterr().err
    assert "warning: parameter total_kimg = 0.008 is not above the progress of checkpoint" in err
    assert "(0.016 kimg)" in err


# ------------------------------------------------------------------------ early validation
def test_the_runner_rejects_a_bad_registry_name_before_any_kernel_starts(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(REPO)
    (tmp_path / "sweep.yaml").write_text(
        "notebook: notebooks/02_train.ipynb\ncases:\n  - {name: ok}\n  - {name: typo, perturbation.kind: gausian}\n"
    )
    with pytest.raises(SystemExit) as exit_:  # as `python -m lafite_core.runner run ...` does
        run_main(lambda: runner.main(["run", str(tmp_path / "sweep.yaml"), "--results", str(tmp_path)]), (Exception,))
    err = capfd.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: run 02_train-")
    assert "perturbation.kind = 'gausian' is not allowed; did you mean 'gaussian'?" in err
    assert not (tmp_path / "runs").exists()  # nothing started


def _text_file(path: Path) -> Path:
    path.write_text("this is a README, not weights\n")
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo never",))


def test_weights_files_are_sniffed_and_refused_naming_the_parameter(tmp_path):
    text = _text_file(tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"pretrained = '.*weights.pt' is not a weights file: it appears to be text"):
        load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(text)))
    with pytest.raises(ValueError, match=r"perturbation.learned_weights = .* it appears to be text"):
        load_learned_perturbation(text, 128)
    Image.new("RGB", (4, 4)).save(tmp_path / "picture.safetensors", format="PNG")
    with pytest.raises(ValueError, match="learned_weights = .* it appears to be a PNG image"):
        load_learned_perturbation(tmp_path / "picture.safetensors", 128)
    torch.save(_Evil(), tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="pretrained = .*evil.pt' was refused: it holds more than tensors"):
        load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(tmp_path / "evil.pt")))
    with pytest.raises(ValueError, match="learned_weights = .*evil.pt' is not a readable state dict"):
        load_learned_perturbation(tmp_path / "evil.pt", 128)


def test_a_resume_or_fine_tune_file_that_is_not_a_checkpoint_is_named(tmp_path):
    text = _text_file(tmp_path / "checkpoint.pt")
    for parameter in ("resume", "fine_tune_from"):
        cfg = tiny_config(tmp_path / parameter, **{parameter: str(text)})
        with pytest.raises(ValueError, match=f"parameter {parameter} = .* it appears to be text"):
            Trainer(cfg, TinyImageTextSet())
        assert not (tmp_path / parameter).exists()


def test_a_bad_weights_file_on_the_command_line_is_one_error_line(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    text = _text_file(tmp_path / "w.safetensors")
    with pytest.raises(SystemExit) as exit_:  # as `python -m lafite_core.training --set ...` does
        run_main(lambda: training.main(["--set", f"encoder.pretrained={text}"]), INPUT_ERRORS)
    err = capfd.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: parameter encoder: parameter pretrained = ") and err.count("\n") == 1
    assert "it appears to be text (starting 'this is a README, not weights')" in err


# ---------------------------------------------------------------------- what is cut, said
def _folder_of_images(root: Path, sizes: dict[str, int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, side in sizes.items():
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / f"{name}.png")
        (root / f"{name}.txt").write_text(f"a picture called {name}\n")


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return load_encoder(EncoderConfig(name="lafite-tiny", pretrained=None))


def test_images_below_the_resolution_are_listed_in_the_cache_report(tmp_path, encoder, capsys):
    _folder_of_images(tmp_path / "images", {"big": 40, "tiny": 1, "small": 20})
    data = build_dataset("image_folder", tmp_path / "images", 32)
    cache = build_cache(data, encoder, tmp_path / "cache", progress=False)
    listed = {Path(e["path"]).name: e["size"] for e in cache.report["enlarged"]}
    assert listed == {"tiny.png": [1, 1], "small.png": [20, 20]}
    assert "note: 2 images were smaller than 32 px and were enlarged" in capsys.readouterr().out


def test_a_build_stopped_by_a_bad_file_continues_after_the_fix_keeping_finished_shards(tmp_path, encoder):
    _folder_of_images(tmp_path / "images", {f"{i:02d}": 40 for i in range(6)})
    (tmp_path / "images" / "04.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data = build_dataset("image_folder", tmp_path / "images", 32)
    with pytest.raises(OSError, match="04.png"):
        build_cache(data, encoder, tmp_path / "cache", shard_size=2, progress=False)
    assert sorted(p.name for p in (tmp_path / "cache" / "shards").glob("*.json")) == ["00000.json", "00001.json"]

    (tmp_path / "images" / "00.txt").write_text("a caption changed in a finished shard\n")
    changed = build_dataset("image_folder", tmp_path / "images", 32)
    with pytest.raises(CacheMismatchError, match=r"finished shard 0 .* start afresh with `rm -r .*cache` and run"):
        build_cache(changed, encoder, tmp_path / "cache", shard_size=2, progress=False)

    _folder_of_images(tmp_path / "images", {"00": 40, "04": 36})  # 00 as it was; 04 fixed (another size)
    fixed = build_dataset("image_folder", tmp_path / "images", 32)
    counted = CountingEncoder(encoder)
    cache = build_cache(fixed, counted, tmp_path / "cache", shard_size=2, progress=False)
    assert len(cache) == 6 and counted.images == 2  # only the unfinished shard was embedded
    assert cache.meta["dataset"]["fingerprint"] == fixed.fingerprint()


def test_a_huge_grid_is_split_into_pages_that_reopen(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grids, "MAX_GRID_PIXELS", 4 * 8 * 8 * 40)  # about 4 rows of 8 px images a page
    images = torch.rand(30 * 4, 3, 8, 8) * 2 - 1
    prompts = [f"prompt {i}" for i in range(30)]
    first = grids.save_grid(images, tmp_path / "grid.png", columns=4, captions=prompts)
    pages = [first, *sorted(tmp_path.glob("grid-*.png"), key=lambda p: int(p.stem.split("-")[1]))]
    assert first == tmp_path / "grid.png" and len(pages) > 1
    row = grids.image_grid(images[:4], 4, captions=["one row"]).height
    heights = []
    for page in pages:
        with Image.open(page) as picture:
            picture.load()
            assert picture.width * picture.height <= grids.MAX_GRID_PIXELS
            heights.append(picture.height)
    assert all(h % row == 0 for h in heights) and sum(heights) == 30 * row  # every row on some page, once
    assert f"written as {len(pages)} pages" in capsys.readouterr().out
