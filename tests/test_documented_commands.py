"""Every command in the README and in the notebooks' markdown, as written: its program exists, the
files it names exist, and its command line parses (each module's argparse runs on the exact
arguments and stops before any work). The cheap ones also run for real (05_sample's papermill
example); the own-data walkthrough runs in test_own_data.py."""

from __future__ import annotations

import argparse
import json
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lafite_core import cli

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = ("python ", "papermill ", "torchrun ", "lafite ")


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every command line in a fenced block of the README or a notebook's markdown."""
    texts = [("README.md", (REPO / "README.md").read_text())]
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        texts += [(notebook.name, "".join(c["source"])) for c in cells if c["cell_type"] == "markdown"]
    found = []
    for where, text in texts:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
            for line in block.splitlines():
                command = line.split("  #")[0].strip()
                if command.startswith(PROGRAMS):
                    found.append((where, command))
    return found


COMMANDS = documented_commands()


class Parsed(BaseException):  # past the runner's `except Exception`
    """Raised right after a command's argparse accepted its arguments: nothing else runs."""


@pytest.fixture
def parse_only(monkeypatch):
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)


def test_the_documents_hold_commands():
    wheres = {where for where, _ in COMMANDS}
    assert "README.md" in wheres and "05_sample.ipynb" in wheres and len(COMMANDS) >= 15


def _argv(command: str) -> list[str]:
    """The lafite argv equivalent of a documented command line (torchrun's own options dropped)."""
    words = shlex.split(command)
    program, rest = words[0], words[1:]
    if program == "torchrun":
        rest = rest[rest.index("-m") :]
    if program == "lafite":
        return rest
    assert rest[0] == "-m" or rest[0].endswith(".py"), command
    return rest


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_documented_command_names_existing_files_and_parses(where, command, parse_only, monkeypatch):
    words = shlex.split(command)
    for word in words:
        if re.match(r"^(params|notebooks|benchmarks|lafite_core/assets)/\S+\.\w+$", word):
            assert (REPO / word).is_file(), f"{where}: {command}: {word} does not exist"
    if words[0] == "papermill":
        notebook = REPO / words[1]
        assert notebook.is_file()
        return  # run for real below (papermill parses its own options)
    argv = _argv(command)
    with pytest.raises(Parsed):
        if words[0] == "lafite":
            cli.main(argv)
        elif argv[0] == "-m":
            module = argv[1]
            monkeypatch.setattr(sys, "argv", [module, *argv[2:]])
            if module == "lafite_core":
                cli.main(argv[2:])
            else:
                __import__(module, fromlist=["main"]).main(argv[2:])
        else:
            monkeypatch.setattr(sys, "argv", argv)
            runpy.run_path(str(REPO / argv[0]), run_name="__main__")


PAPERMILL = [(w, c) for w, c in COMMANDS if c.startswith("papermill ")]


@pytest.mark.slow
@pytest.mark.parametrize("where, command", PAPERMILL, ids=[w for w, _ in PAPERMILL])
def test_papermill_examples_run_as_written(where, command, tmp_path):
    """The papermill examples (05_sample's grid), verbatim but for their /tmp paths."""
    pytest.importorskip("papermill")
    prompts = json.loads(re.search(r"-p prompts '(.*?)'", command).group(1))
    command = re.sub(r"/tmp/(\S+)", lambda m: str(tmp_path / m.group(1)), command)
    words = shlex.split(command)
    subprocess.run([sys.executable, "-m", *words], cwd=REPO, check=True, capture_output=True)  # this venv's papermill
    out = Path(words[words.index("out_dir") + 1])
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["prompts"] == prompts and (out / "grid.png").is_file()


@pytest.mark.slow
def test_the_sample_notebooks_runner_command_runs_as_written(tmp_path):
    """`python -m lafite_core.runner run notebooks/05_sample.ipynb --params params/sample.yaml`, verbatim,
    in a folder that holds the kit's notebooks and params (so its results/ is the test's own)."""
    pytest.importorskip("papermill")
    command = next(c for _, c in COMMANDS if c.startswith("python -m lafite_core.runner run notebooks/05_sample"))
    for folder in ("notebooks", "params"):
        (tmp_path / folder).symlink_to(REPO / folder)
    words = shlex.split(command)
    done = subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (summary,) = (tmp_path / "results" / "runs").glob("05_sample-*/out/metrics.json")
    assert len(json.loads(summary.read_text())["prompts"]) == 10  # params/sample.yaml's prompts
