"""The `lafite` command: every sub-command answers --help, and `python -m lafite_core` is the same
command."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from lafite_core import cli

REPO = Path(__file__).resolve().parents[1]
EXPECTED = ["demo", "run", "collect", "train", "evaluate", "sample", "export", "embed", "convert"]


@pytest.mark.slow
def test_python_dash_m_lafite_core_lists_every_command():
    out = subprocess.run(
        [sys.executable, "-m", "lafite_core", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in EXPECTED:
        assert f"\n    {name} " in out
    bad = subprocess.run([sys.executable, "-m", "lafite_core", "trian"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'trian'" in bad.stderr


@pytest.mark.parametrize("name", EXPECTED)
def test_every_command_answers_help_naming_itself_and_each_options_default(name, capsys, monkeypatch):
    """`lafite <name> --help` names `lafite <name>`, and every argument has help; every option's help
    states its default."""
    try:
        cli.command_main(name)
    except FileNotFoundError as err:  # convert: lafite_core/convert.py comes with the snapshot converter
        assert name == "convert" and "lafite_core.convert" in str(err)
        return
    parsers = []
    format_help = argparse.ArgumentParser.format_help
    monkeypatch.setattr(argparse.ArgumentParser, "format_help", lambda self: parsers.append(self) or format_help(self))
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lafite {name} ")
    (parser,) = parsers
    for action in parser._actions:
        if action.dest == "help":
            continue
        text = parser._get_formatter()._expand_help(action) if action.help else ""
        assert text, f"lafite {name}: {action.dest} has no help"
        if action.option_strings and not action.required:
            assert "default" in text, f"lafite {name} {action.option_strings[0]}: no default in {text!r}"


@pytest.mark.slow
def test_embed_command_builds_a_cache_from_params(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            [
                "embed",
                "--params",
                str(REPO / "params" / "embed.yaml"),
                "--set",
                "data.size=8",
                "--set",
                f"cache_dir={tmp_path / 'cache'}",
                "--set",
                f"output_dir={tmp_path / 'out'}",
            ]
        )
    assert exit_info.value.code == 0
    assert (tmp_path / "cache" / "meta.json").is_file() and '"items": 8' in capsys.readouterr().out
