"""Every committed notebook: clean (no outputs), a python3 kernel, one `parameters` cell whose
values are its config's defaults, and, where a params file mirrors the notebook, that file too."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lafite_core import config
from lafite_core.config import from_namespace, load_yaml

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# params files whose values are exactly the notebook's defaults (the others override some)
DEFAULT_PARAMS = {
    "00_pretrain_encoder": "pretrain_encoder.yaml",
    "01_embed": "embed.yaml",
    "02_train": "train.yaml",
    "04_evaluate": "evaluate.yaml",
}


def test_all_six_notebooks_are_checked():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_its_parameters_are_its_config_defaults(path):
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
    assert from_namespace(cls, namespace) == cls()
    if path.stem in DEFAULT_PARAMS:
        assert load_yaml(REPO / "params" / DEFAULT_PARAMS[path.stem], cls) == cls()
