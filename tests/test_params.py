"""Every shipped params file matches the schema of what it drives: a typo in a key or a wrong
type in params/ fails here, not an hour into a sweep."""
import re
from pathlib import Path

import pytest

from lafite_core import config, runner

PARAMS = sorted((Path(__file__).resolve().parents[1] / "params").glob("*.yaml"))
HEADER = re.compile(r"#\s*(\S+)\s*->\s*lafite_core\.config\.(\w+)")


@pytest.mark.parametrize("path", PARAMS, ids=[p.name for p in PARAMS])
def test_params_file_matches_its_schema(path):
    data = runner.load_params(path)
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


def test_params_folder_is_not_empty():
    assert len(PARAMS) >= 8
