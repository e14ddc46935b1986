"""Every committed notebook: clean (no outputs), a python3 kernel, and one `parameters` cell that
holds a `params` path and commented examples only, so its config is the dataclass defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lafite_core import config
from lafite_core.params import from_namespace

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_all_six_notebooks_are_checked():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_its_parameters_cell_holds_no_defaults(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"] == {"name": "python3", "language": "python", "display_name": "Python 3"}
    cls = getattr(config, nb["metadata"]["lafite"]["config"])
    assert nb["metadata"]["lafite"]["output"] in cls.__dataclass_fields__  # the runner points it at the run folder
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    following = "".join(nb["cells"][tagged[0] + 1]["source"])
    assert f"from_namespace({cls.__name__}, globals())" in following  # the values reach the library unchanged
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    namespace: dict = {}
    exec("".join(nb["cells"][tagged[0]]["source"]), namespace)
    assert namespace["params"] is None
    assert not set(namespace) & set(cls.__dataclass_fields__)  # no second copy of a default
    assert from_namespace(cls, namespace) == cls()


def test_notebook_config_reads_its_params_file_then_the_injected_fields(tmp_path):
    (tmp_path / "p.yaml").write_text("total_kimg: 2.0\nnetwork: {z_dim: 32}\n")
    cfg = from_namespace(config.TrainConfig, {"params": str(tmp_path / "p.yaml"), "total_kimg": 3.0, "seed": 7})
    assert (cfg.total_kimg, cfg.seed, cfg.network.z_dim) == (3.0, 7, 32)
    assert cfg.network.channel_base == config.TrainConfig().network.channel_base
