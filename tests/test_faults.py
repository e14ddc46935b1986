"""Reliability: two writers on one folder, a runner stopped by a signal, bad inputs caught before
any work with a one-line error, and what the kit cuts (small images, huge grids) said out loud."""

from __future__ import annotations

import io
import json
import os
import pickle
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
from safetensors.torch import save_file
from training_fixtures import TinyImageTextSet, tiny_config

from lafite_core import cli, convert, grids, runner, sampler, training
from lafite_core.assets import TINY_ENCODER_WEIGHTS
from lafite_core.checkpoint import load_checkpoint, save_checkpoint
from lafite_core.config import EncoderConfig, EvalConfig
from lafite_core.convert import convert_snapshot
from lafite_core.data import build_dataset
from lafite_core.data.cache import CacheMismatchError, build_cache, encoder_differences
from lafite_core.encoders import load_encoder
from lafite_core.evaluation import evaluate
from lafite_core.params import INPUT_ERRORS, run_main
from lafite_core.perturbations import load_learned_perturbation
from lafite_core.run_lock import FolderLockedError, RunLock
from lafite_core.sampler import Sampler
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


PROBE = (
    "import sys, time; from lafite_core import cli; started = time.monotonic()\n"
    "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit as stop:\n"
    "    print(stop.code, 'torch' in sys.modules, round(time.monotonic() - started, 2))"
)


@pytest.mark.parametrize(
    "command, field, what", [("train", "run_dir", "training"), ("embed", "cache_dir", "embedding")]
)
def test_a_second_writer_command_is_refused_before_it_loads_anything(tmp_path, command, field, what):
    holder = hold_lock(tmp_path / "busy")
    try:
        second = subprocess.run(
            [sys.executable, "-c", PROBE, command, "--set", f"{field}={tmp_path / 'busy'}"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.kill()
        holder.wait()
    code, torch_imported, seconds = second.stdout.split()
    assert (code, torch_imported) == ("2", "False"), second.stderr  # refused before torch was imported
    assert float(seconds) < 5
    assert second.stderr.startswith(f"error: {tmp_path / 'busy'} is in use by another {what} (pid {holder.pid} on ")
    assert second.stderr.count("\n") == 1 and not (tmp_path / "busy" / "checkpoints").exists()


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


def test_a_runner_reports_runs_another_runner_holds_as_locked_and_exits_0(tmp_path, capfd):
    nb = write_notebook(tmp_path / "nb.ipynb", "pass")
    (tmp_path / "sweep.yaml").write_text(
        f"notebook: {nb}\ncases:\n  - {{name: held, n: 1}}\n  - {{name: free, n: 2}}\n"
    )
    held, free = runner.expand_sweep(tmp_path / "sweep.yaml")
    holder = hold_lock(runner.run_dir(held, tmp_path / "results"))  # the other runner, busy with `held`
    try:
        with pytest.raises(SystemExit) as exit_:
            run_main(lambda: runner.main(["run", str(tmp_path / "sweep.yaml"), "--results", str(tmp_path / "results")]))
    finally:
        holder.kill()
        holder.wait()
    out, err = capfd.readouterr()
    assert exit_.value.code == 0, out + err
    assert f"locked {held.run_id}: " in out and f"pid {holder.pid}" in out
    assert "FAILED" not in out and "None" not in out
    assert runner.read_status(runner.run_dir(free, tmp_path / "results"))["status"] == "done"


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
    out, err = capsys.readouterr()
    newest = tmp_path / "run" / "checkpoints" / "checkpoint-0000000016.pt"
    assert f"resumed from {newest} at 0.016 kimg\n" in out
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resumed_at_kimg"] == 0.016
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
    with pytest.raises(ValueError, match="pretrained = .*evil.pt' was refused: a zip .* calls posix.system"):
        load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(tmp_path / "evil.pt")))
    with pytest.raises(ValueError, match="learned_weights = .*evil.pt' was refused: a zip .* calls posix.system"):
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


def _cut_copies(source: Path, folder: Path) -> list[Path]:
    """`source` cut short inside its header, early, half-way and one byte before its end."""
    data = source.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    cuts = []
    for size in (24, len(data) // 20, len(data) // 2, len(data) - 1):
        cuts.append(folder / f"cut-{size}{source.suffix}")
        cuts[-1].write_bytes(data[:size])
    return cuts


def _real_checkpoint(folder: Path) -> Path:
    """A small checkpoint written by the kit's own writer."""
    state = {"G_ema": torch.nn.Linear(64, 64).state_dict(), "config": "{}", "encoder_identity": "{}", "nimg": 16}
    return save_checkpoint(state, folder, nimg=16)


def _one_line(err: Exception | str) -> str:
    text = str(err)
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


def _hostile_pickles(folder: Path) -> list[Path]:
    """Code-running pickles as torch.save writes them (zip) and as pickle writes them (protocols 2, 4)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"G_ema": _Evil()}, folder / "evil-zip.pt")
    (folder / "evil-p2.pt").write_bytes(pickle.dumps({"format": "lafite-checkpoint-v1", "x": _Evil()}, protocol=2))
    (folder / "evil-p4.pt").write_bytes(pickle.dumps([_Evil()], protocol=4))
    return [folder / "evil-zip.pt", folder / "evil-p2.pt", folder / "evil-p4.pt"]


def test_a_truncated_weights_file_is_one_line_in_every_loader(tmp_path):
    checkpoints = _cut_copies(_real_checkpoint(tmp_path / "real"), tmp_path / "pt")
    save_file({"mu.0.weight": torch.zeros(64, 128)}, str(tmp_path / "small.safetensors"))
    tensors = _cut_copies(tmp_path / "small.safetensors", tmp_path / "st")
    encoders = _cut_copies(Path(TINY_ENCODER_WEIGHTS), tmp_path / "encoder")
    for path in encoders:
        with pytest.raises(ValueError, match="parameter pretrained = .* appears to be a safetensors file but is inc"):
            load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(path)))
    for path in checkpoints + tensors:
        with pytest.raises(ValueError, match="learned_weights = .* incomplete .*download or export it again") as err:
            load_learned_perturbation(path, 128)
        _one_line(err.value)
    for path in checkpoints:
        for parameter in ("resume", "fine_tune_from", "checkpoint"):
            with pytest.raises(ValueError, match=f"parameter {parameter} = .* appears to be a zip .* incomplete"):
                load_checkpoint(path, parameter=parameter)
        with pytest.raises(ValueError, match="parameter checkpoint = .* zip directory is missing"):
            Sampler.load(path)
    for path in tensors:
        with pytest.raises(ValueError, match="parameter checkpoint = .* safetensors file but is incomplete"):
            Sampler.load(path)
    (tmp_path / "snapshot.pkl").write_bytes(pickle.dumps({"G_ema": list(range(1000))}))
    for path in _cut_copies(tmp_path / "snapshot.pkl", tmp_path / "pkl")[1:]:
        with pytest.raises(ValueError, match="parameter snapshot = .* a Python pickle but is incomplete"):
            convert_snapshot(path, tmp_path / "g.safetensors", EncoderConfig(pretrained=str(TINY_ENCODER_WEIGHTS)))
    assert not (tmp_path / "g.safetensors").exists()


def test_hostile_pickles_are_one_line_naming_the_parameter_and_nothing_runs(tmp_path, capfd):
    for path in _hostile_pickles(tmp_path / "evil"):
        for parameter in ("resume", "fine_tune_from", "checkpoint"):
            with pytest.raises(ValueError, match=f"parameter {parameter} = .* calls posix.system") as err:
                load_checkpoint(path, parameter=parameter)
            _one_line(err.value)
        with pytest.raises(ValueError, match="learned_weights = .* was refused: .* calls posix.system"):
            load_learned_perturbation(path, 128)
    assert "never" not in capfd.readouterr().out


def _payload_in_storage_bytes() -> bytes:
    """A snapshot-like pickle whose tensor storage bytes are themselves a code-running torch.save."""
    buffer = io.BytesIO()
    torch.save(_Evil(), buffer)

    class Storage:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (buffer.getvalue(),))

    return pickle.dumps({"G_ema": Storage()}, protocol=4)


def test_a_payload_in_a_snapshot_storage_is_one_line(tmp_path, capfd):
    (tmp_path / "network-snapshot-000001.pkl").write_bytes(_payload_in_storage_bytes())
    with pytest.raises(ValueError) as err:
        convert_snapshot(tmp_path / "network-snapshot-000001.pkl", tmp_path / "g.safetensors", EncoderConfig())
    assert "a tensor storage holds more than tensor data" in _one_line(err.value)
    assert "never" not in capfd.readouterr().out


def _command_error(capfd, main, argv: list[str]) -> str:
    """The stderr of `main(argv)` run as an entry point, asserting exit code 2 and a single line."""
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda: main(argv), INPUT_ERRORS)
    err = capfd.readouterr().err
    assert exit_.value.code == 2, err
    lines = [line for line in err.split("\n")[:-1] if not line.startswith("\r")]  # a progress bar ends its line
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_bad_weights_on_each_command_line_exit_2_in_one_line_leaving_no_folder(tmp_path, capfd):
    [cut_pt, *_] = _cut_copies(_real_checkpoint(tmp_path / "real"), tmp_path / "pt")[2:]
    [evil_zip, evil_p2, _] = _hostile_pickles(tmp_path / "evil")
    run_dir = tmp_path / "run"
    for parameter in ("resume", "fine_tune_from"):
        for path, message in ((cut_pt, "zip directory is missing"), (evil_zip, "calls posix.system")):
            err = _command_error(capfd, training.main, ["--set", f"run_dir={run_dir}", "--set", f"{parameter}={path}"])
            assert f"parameter {parameter} = " in err and message in err
            assert not run_dir.exists()
    for path in (cut_pt, evil_p2):
        err = _command_error(
            capfd, sampler.main, ["sample", "a red square", "--checkpoint", str(path), "--out", str(tmp_path / "out")]
        )
        assert "parameter checkpoint = " in err
    assert not (tmp_path / "out").exists()
    snapshot = tmp_path / "network-snapshot-000001.pkl"
    snapshot.write_bytes(_payload_in_storage_bytes())
    err = _command_error(
        capfd,
        convert.main,
        [
            str(snapshot),
            str(tmp_path / "g.safetensors"),
            "--encoder",
            "lafite-tiny",
            "--pretrained",
            str(TINY_ENCODER_WEIGHTS),
        ],
    )
    assert "network-snapshot-000001.pkl" in err and not (tmp_path / "g.safetensors").exists()


def test_debug_shows_the_traceback_behind_the_line(tmp_path, capfd, monkeypatch):
    [evil, *_] = _hostile_pickles(tmp_path / "evil")
    monkeypatch.setattr(sys, "argv", ["lafite_core.sampler", "--debug"])
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda: sampler.main(["sample", "a red square", "--checkpoint", str(evil)]))
    err = capfd.readouterr().err
    assert (
        exit_.value.code == 2 and "Traceback" in err and err.splitlines()[-1].startswith("error: parameter checkpoint")
    )


def _embed_args(tmp_path: Path) -> list[str]:
    return [
        *(
            "--set",
            "data.kind=image_folder",
            "--set",
            f"data.root={tmp_path / 'images'}",
            "--set",
            "data.resolution=32",
        ),
        *("--set", f"cache_dir={tmp_path / 'cache'}", "--set", f"output_dir={tmp_path / 'out'}"),
    ]


def test_a_caption_file_that_is_not_utf8_is_one_line_naming_it_and_skip_bad(tmp_path, capfd):
    _folder_of_images(tmp_path / "images", {"a": 40, "b": 40})
    (tmp_path / "images" / "b.txt").write_bytes(b"caf\xe9 au lait\n")  # latin-1
    err = _command_error(capfd, cli.embed_main, _embed_args(tmp_path))
    assert "b.txt is not UTF-8 text" in err and "data.skip_bad=true" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_a_zero_byte_image_is_one_line_naming_the_item_and_skip_bad(tmp_path, capfd):
    _folder_of_images(tmp_path / "images", {"a": 40, "b": 40})
    (tmp_path / "images" / "b.png").write_bytes(b"")
    err = _command_error(capfd, cli.embed_main, _embed_args(tmp_path))
    assert "item 1 of the dataset: cannot read image " in err and "b.png" in err and "data.skip_bad=true" in err
    assert not (tmp_path / "out").exists()


def test_empty_caption_lines_are_counted_in_the_cache_report(tmp_path, encoder):
    _folder_of_images(tmp_path / "images", {"a": 40, "b": 40})
    (tmp_path / "images" / "b.txt").write_text("a caption\n\n   \nanother caption\n")
    data = build_dataset("image_folder", tmp_path / "images", 32)
    cache = build_cache(data, encoder, tmp_path / "cache", progress=False)
    assert cache.report["empty_caption_lines"] == {
        "count": 2,
        "files": [{"path": str(tmp_path / "images" / "b.txt"), "lines": 2}],
    }
    assert [len(data[i].captions) for i in range(2)] == [1, 2]


def test_one_weights_file_named_by_a_relative_and_an_absolute_path_is_one_encoder(monkeypatch):
    monkeypatch.chdir(REPO)
    relative = Path(TINY_ENCODER_WEIGHTS).relative_to(REPO)
    by_relative = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(relative))).identity()
    by_absolute = load_encoder(EncoderConfig(name="lafite-tiny", pretrained=str(TINY_ENCODER_WEIGHTS))).identity()
    assert by_relative["pretrained"] != by_absolute["pretrained"]
    assert encoder_differences(by_relative, by_absolute) == []
    other = {**by_absolute, "weights_sha256": "0" * 64}
    assert encoder_differences(by_relative, other) == [
        f"encoder weights_sha256: cache has {by_relative['weights_sha256']!r}, asked for {'0' * 64!r}"
    ]


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
