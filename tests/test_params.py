"""Every shipped params file matches the schema of what it drives: a typo in a key or a wrong
type in params/ fails here, not an hour into a sweep."""

import argparse
import re
from pathlib import Path

import pytest

from lafite_core import config, runner
from lafite_core.config import TrainConfig
from lafite_core.params import add_params_arguments, load_params, load_with_overrides

PARAMS = sorted((Path(__file__).resolve().parents[1] / "params").rglob("*.yaml"))  # examples/ too
HEADER = re.compile(r"#\s*(\S+)\s*->\s*lafite_core\.config\.(\w+)")


@pytest.mark.parametrize("path", PARAMS, ids=[p.name for p in PARAMS])
def test_params_file_matches_its_schema(path):
    data = load_params(path)
    if "notebook" in data:  # a sweep: every expanded run must validate against its notebook
        runs = runner.expand_sweep(path)
        assert runs
        for run in runs:
            runner.validate(run)
        return
    header = HEADER.match(path.read_text().splitlines()[0])
    assert header, f"{path}: first line must say '# <notebook or module> -> lafite_core.config.<Config>'"
    target, class_name = header.groups()
    cls = getattr(config, class_name)
    config.from_dict(cls, data)
    if target.endswith(".ipynb"):
        bound, _ = runner.notebook_binding(target)
        assert bound is cls, f"{path} names {class_name} but {target} binds {bound.__name__}"


def test_command_line_params_and_overrides_reach_the_config(tmp_path):
    (tmp_path / "p.yaml").write_text("total_kimg: 7\nnetwork: {z_dim: 32}\n")
    parser = argparse.ArgumentParser()
    add_params_arguments(parser, "TrainConfig", "total_kimg=10")
    args = parser.parse_args(["--params", str(tmp_path / "p.yaml"), "--set", "network.w_dim=48", "--set", "seed=3"])
    cfg = load_with_overrides(TrainConfig, args.params, args.overrides)
    assert (cfg.total_kimg, cfg.network.z_dim, cfg.network.w_dim, cfg.seed) == (7.0, 32, 48, 3)
    assert cfg.network.channel_max == TrainConfig().network.channel_max  # the section given in part keeps the rest
