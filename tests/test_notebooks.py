"""Every committed notebook: clean (no outputs), a python3 kernel, and one `parameters` cell that
holds a `params` path and commented examples only, so its config is the dataclass defaults."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lafite_core import config
from lafite_core.params import from_namespace, kit_home, parameters_cell

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]  # not its ClassVars (TrainConfig.PRESETS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_its_parameters_cell_holds_no_defaults(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"] == {"name": "python3", "language": "python", "display_name": "Python 3"}
    cls = getattr(config, nb["metadata"]["lafite"]["config"])
    assert nb["metadata"]["lafite"]["output"] in _field_names(cls)  # the runner points it at the run folder
    tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    following = "".join(nb["cells"][tagged[0] + 1]["source"])
    assert f"from_namespace({cls.__name__}, globals())" in following  # the values reach the library unchanged
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    source = "".join(nb["cells"][tagged[0]]["source"])
    assert source == parameters_cell(cls), "run scripts/sync_notebook_parameters.py"
    namespace: dict = {}
    exec(source, namespace)
    assert namespace["params"] is None
    assert all(namespace[name] is ... for name in _field_names(cls))  # no second copy of a default
    assert from_namespace(cls, namespace) == cls()


def test_notebook_config_reads_its_params_file_then_the_injected_fields(tmp_path):
    (tmp_path / "p.yaml").write_text("total_kimg: 2.0\nnetwork: {z_dim: 32}\n")
    cfg = from_namespace(config.TrainConfig, {"params": str(tmp_path / "p.yaml"), "total_kimg": 3.0, "seed": 7})
    assert (cfg.total_kimg, cfg.seed, cfg.network.z_dim) == (3.0, 7, 32)
    assert cfg.network.channel_base == config.TrainConfig().network.channel_base


def test_papermill_strings_for_list_and_section_fields_are_read_as_yaml():
    cfg = from_namespace(
        config.SampleConfig, {"prompts": '["a red star", "a blue cross"]', "n": 2, "checkpoint": "x.safetensors"}
    )
    assert cfg.prompts == ["a red star", "a blue cross"] and cfg.n == 2
    train = from_namespace(config.TrainConfig, {"network": "{z_dim: 32}", "run_dir": "[not, a, list]"})
    assert train.network.z_dim == 32 and train.run_dir == "[not, a, list]"  # a str field stays as given
    with pytest.raises(TypeError, match="-y 'prompts: \\[a, b\\]'"):
        from_namespace(config.SampleConfig, {"prompts": "a red star"})


def test_kit_home_is_lafite_home_when_set_else_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("LAFITE_HOME", raising=False)
    assert kit_home() == REPO
    monkeypatch.setenv("LAFITE_HOME", str(tmp_path))
    assert kit_home() == tmp_path.resolve()
    monkeypatch.chdir(REPO / "notebooks")
    from_namespace(config.SampleConfig, {})
    assert Path.cwd() == tmp_path.resolve()  # the notebook's kernel works in the home
    with pytest.raises(FileNotFoundError, match=f"params file not found: {tmp_path.resolve() / 'params' / 'x.yaml'}"):
        from_namespace(config.SampleConfig, {"params": "params/x.yaml"})


@pytest.mark.slow
def test_help_notebook_lists_every_parameter_with_its_type_and_default():
    out = subprocess.run(
        [sys.executable, "-m", "papermill", "--help-notebook", str(REPO / "notebooks" / "02_train.ipynb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Unknown type" not in out
    assert "total_kimg: float" in out and "default 30.0" in out
    assert "network: dict" in out and "params: Optional[str]" in out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_field_of_the_parameters_cell(path):
    papermill = pytest.importorskip("papermill")
    cls = getattr(config, json.loads(path.read_text())["metadata"]["lafite"]["config"])
    found = papermill.inspect_notebook(str(path))
    preset = ["preset"] if hasattr(cls, "PRESETS") else []
    assert list(found) == ["params", *preset, *_field_names(cls)]
    assert all(p["inferred_type_name"] != "None" for p in found.values())


def _execute_in_notebooks_folder(notebook: str, out: Path, parameters: dict, home: Path | None = None) -> str:
    """papermill as JupyterLab starts kernels: in notebooks/, with the kit's home taken from the
    repository (or `home`: a fresh clone's empty results). Returns the executed notebook's text output."""
    papermill = pytest.importorskip("papermill")
    env = {k: v for k, v in os.environ.items() if k != "LAFITE_HOME"}
    if home is not None:
        env["LAFITE_HOME"] = str(home)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", env)
        papermill.execute_notebook(
            str(REPO / "notebooks" / notebook),
            str(out),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(REPO / "notebooks"),
            progress_bar=False,
        )
    cells = json.loads(out.read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))


TINY_PROTOCOL = {
    "num_samples": 8,
    "batch_size": 8,
    "reference_size": 8,
    "kid_subsets": 2,
    "kid_subset_size": 4,
    "r_precision_candidates": 4,
}


@pytest.mark.slow
def test_evaluate_notebook_runs_from_the_notebooks_folder_with_relative_params(tmp_path):
    _execute_in_notebooks_folder(
        "04_evaluate.ipynb",
        tmp_path / "04.ipynb",
        dict(
            params="params/evaluate.yaml",  # relative to the repository, not to notebooks/
            checkpoint="lafite_core/assets/demo-generator.safetensors",
            data={"size": 24},
            protocol=TINY_PROTOCOL,
            metrics=["clip_score", "caption_accuracy"],
            heldout_split=None,
            stats_cache=str(tmp_path / "stats"),
            results_dir=str(tmp_path / "results"),
            output_dir=str(tmp_path / "eval"),
        ),
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["test/caption_accuracy"] <= 1.0
    assert (tmp_path / "results" / "shapes_eval.csv").is_file()


@pytest.mark.slow
def test_evaluate_then_train_notebooks_run_all_on_a_fresh_clone(tmp_path):
    """No run and no cache yet: 04 evaluates the shipped generator and says so, 02 builds its
    feature cache and trains. Only sizes a test can afford are given; everything else is a default."""
    home = tmp_path / "fresh"
    home.mkdir()
    tiny_data = {"size": 24}
    said = _execute_in_notebooks_folder(
        "04_evaluate.ipynb",
        tmp_path / "04.ipynb",
        dict(data=tiny_data, heldout_split=None, protocol=TINY_PROTOCOL, metrics=["clip_score", "caption_accuracy"]),
        home,
    )
    assert "evaluating the shipped generator lafite_core/assets/demo-generator.safetensors" in said
    assert json.loads((home / "results/runs/evaluate/metrics.json").read_text())["kimg"] > 0
    said = _execute_in_notebooks_folder(
        "02_train.ipynb", tmp_path / "02.ipynb", dict(data=tiny_data, total_kimg=0.016, tick_kimg=0.016), home
    )
    assert "No finished feature cache in results/cache/shapes-32-lafite-tiny" in said
    assert json.loads((home / "results/runs/train/metrics.json").read_text())["kimg"] >= 0.016


@pytest.mark.slow
def test_ablation_notebook_runs_from_the_notebooks_folder(tmp_path):
    """One ablation point (train, then evaluate) from notebooks/, the shipped encoder and judge named
    by their paths in the repository (the defaults)."""
    from lafite_core.data import dataset_from_config
    from lafite_core.data.cache import build_cache
    from lafite_core.encoders import load_encoder
    from lafite_core.params import load_yaml

    train = load_yaml(REPO / "params" / "train_tiny.yaml", config.TrainConfig)
    data = {**config.to_dict(train.data), "size": 24}
    build_cache(
        dataset_from_config(config.DataConfig(**data)),
        load_encoder(train.encoder),
        tmp_path / "cache",
        batch_size=24,
        progress=False,
    )
    _execute_in_notebooks_folder(
        "03_ablation.ipynb",
        tmp_path / "03.ipynb",
        dict(
            train={"data": data, "cache": str(tmp_path / "cache"), "total_kimg": 0.004, "tick_kimg": 0.004},
            evaluate={
                "data": {"size": 24},
                "protocol": TINY_PROTOCOL,
                "metrics": ["r_precision", "caption_accuracy"],
                "baselines": [],
                "heldout_split": None,
                "stats_cache": str(tmp_path / "stats"),
            },
            output_dir=str(tmp_path / "point"),
        ),
    )
    metrics = json.loads((tmp_path / "point" / "metrics.json").read_text())
    assert metrics["setting"] == "language_free" and 0.0 <= metrics["test/r_precision"] <= 1.0
