"""Params files, sweep expansion, validation before a kernel starts, parallel execution with one
failing run, skipping finished runs, and collection into a table."""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from lafite_core import runner
from lafite_core.params import load_params


@dataclass
class EchoConfig:
    """Config of the tiny test notebook."""

    message: str = "hi"
    fail: bool = False
    out_dir: str = ""


def write_echo_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('message = "hi"\nfail = False\nout_dir = ""')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import json, pathlib\n"
        "print('echo:', message)\n"
        "assert not fail, 'failing on purpose'\n"
        "pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)\n"
        "json.dump({'length': len(message)}, open(pathlib.Path(out_dir) / 'metrics.json', 'w'))\n"
    )
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.metadata["lafite"] = {"config": "test_runner:EchoConfig", "output": "out_dir"}
    nbformat.write(nb, path)
    return path


def test_params_extends_and_deep_merge(tmp_path):
    (tmp_path / "base.yaml").write_text("a: 1\nnet: {res: 32, z: 64}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nnet: {res: 64}\nb: x\n")
    assert load_params(tmp_path / "child.yaml") == {"a": 1, "net": {"res": 64, "z": 64}, "b": "x"}
    (tmp_path / "nested.yaml").write_text("train: {extends: child.yaml, a: 2}\nout: o\n")
    assert load_params(tmp_path / "nested.yaml") == {
        "train": {"a": 2, "net": {"res": 64, "z": 64}, "b": "x"},
        "out": "o",
    }
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_params(tmp_path / "nope.yaml")


def test_sweep_expands_grid_into_stable_named_runs(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "notebook: nb.ipynb\nname: abl\nparams: {net: {res: 32}}\n"
        "grid:\n  perturbation.kind: [none, gaussian]\n  perturbation.xi: [1.0, 2.0, 3.0]\n"
    )
    runs = runner.expand_sweep(tmp_path / "s.yaml")
    assert len(runs) == 6
    assert {r.sweep for r in runs} == {"abl"}
    assert runs[0].params == {"net": {"res": 32}, "perturbation": {"kind": "none", "xi": 1.0}}
    assert runs[0].label == {"perturbation.kind": "none", "perturbation.xi": 1.0}
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == 6
    assert ids == [r.run_id for r in runner.expand_sweep(tmp_path / "s.yaml")]  # stable
    (tmp_path / "bad.yaml").write_text("notebook: nb.ipynb\ngrid: {a: []}\n")
    with pytest.raises(ValueError, match="grid.a"):
        runner.expand_sweep(tmp_path / "bad.yaml")


def test_validation_rejects_unknown_keys_and_wrong_types(tmp_path):
    nb = write_echo_notebook(tmp_path / "echo.ipynb")
    with pytest.raises(ValueError, match="'mesage'"):
        runner.validate(runner.RunSpec(str(nb), {"mesage": "x"}))
    with pytest.raises(TypeError, match="fail"):
        runner.validate(runner.RunSpec(str(nb), {"fail": "yes"}))
    runner.validate(runner.RunSpec(str(nb), {"message": "ok"}))


@pytest.mark.slow
def test_parallel_runs_one_failing_then_rerun_skips_finished(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    nb = write_echo_notebook(tmp_path / "echo.ipynb")
    good = runner.RunSpec(str(nb), {"message": "hello"}, sweep="t", label={"case": "good"})
    bad = runner.RunSpec(str(nb), {"fail": True}, sweep="t", label={"case": "bad"})
    results = tmp_path / "results"
    outcomes = {o["run_id"]: o for o in runner.run_all([good, bad], results, workers=2)}
    assert outcomes[good.run_id]["status"] == "done"
    assert outcomes[bad.run_id]["status"] == "failed"
    assert "failing on purpose" in outcomes[bad.run_id]["error"]
    assert Path(outcomes[bad.run_id]["executed_notebook"]).is_file()
    assert json.loads((results / "runs" / good.run_id / "out" / "metrics.json").read_text()) == {"length": 5}

    log = (results / "runs" / good.run_id / "log.txt").read_text()
    assert re.search(r"\d\d:\d\d:\d\d Executing Cell 2-", log) and "echo: hello" in log  # as the run went
    cell, latest = runner.log_progress(results / "runs" / good.run_id / "log.txt")
    assert cell == 3 and latest.endswith(" echo: hello")  # what the run's terminal line shows

    again = runner.run_all([good, bad], results, workers=2)
    assert [o["run_id"] for o in again] == [bad.run_id]  # the finished run is skipped

    table = runner.collect("t", results)
    assert set(table["case"]) == {"good", "bad"}
    assert table.set_index("case").loc["good", "length"] == 5
    assert (results / "t.csv").is_file() and (results / "t.md").is_file()
    assert "| good " in (results / "t.md").read_text()
    assert (results / "t.png").stat().st_size > 1000  # a plot of the metric per run


def test_collect_lists_runs_in_sweep_order_and_plots_cases_with_different_keys(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    nb = write_echo_notebook(tmp_path / "echo.ipynb")
    (tmp_path / "s.yaml").write_text(
        f"notebook: {nb}\nname: abl\nparams: {{}}\ncases:\n"
        "  - {name: zeta, kind: none}\n  - {name: alpha, kind: gaussian, xi: 0.5}\n  - {name: mid, kind: official}\n"
    )
    specs = runner.expand_sweep(tmp_path / "s.yaml")
    assert [s.order for s in specs] == [0, 1, 2]
    results = tmp_path / "results"
    for spec, score in zip(reversed(specs), (3.0, 2.0, 1.0)):  # written last-first: folders sort by hash anyway
        folder, _ = runner.prepare(spec, results)
        (folder / "out").mkdir()
        metrics = {"test/r_precision": score, "heldout/r_precision": score / 2, "test/kid_std": 0.1, "seconds": 9.0}
        (folder / "out" / "metrics.json").write_text(json.dumps(metrics))
    table = runner.collect("abl", results)
    assert list(table["case"]) == ["zeta", "alpha", "mid"]
    assert list(table["test/r_precision"]) == [1.0, 2.0, 3.0]
    assert table["xi"].isna().tolist() == [True, False, True]  # only one case sets xi: the plot copes
    assert (results / "abl.png").stat().st_size > 1000


def test_one_worker_per_gpu_each_seeing_only_its_own():
    assert runner.worker_envs(None, gpus=["0", "1", "3"]) == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
        {"CUDA_VISIBLE_DEVICES": "3"},
    ]
    assert runner.worker_envs(2, gpus=["0", "1", "3"]) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert runner.worker_envs(2, gpus=[], cores=8) == [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "4"}] * 2
    assert runner.worker_envs(3, gpus=[], cores=2) == [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}] * 3


def test_visible_gpus_reads_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert runner.visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert runner.visible_gpus() == []


@pytest.mark.slow
def test_ray_backend_on_a_local_instance(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    nb = write_echo_notebook(tmp_path / "echo.ipynb")
    good = runner.RunSpec(str(nb), {"message": "ray!"}, sweep="r")
    bad = runner.RunSpec(str(nb), {"fail": True}, sweep="r")
    for attempt in range(3):  # a loaded 2-core machine can miss Ray's fixed 30 s start-up window
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception here
            ray.shutdown()
            if "timed out during startup" not in str(err) or attempt == 2:
                raise
    try:
        outcomes = {o["run_id"]: o for o in runner.run_all([good, bad], tmp_path / "results", backend="ray")}
    finally:
        ray.shutdown()
    assert outcomes[good.run_id]["status"] == "done"
    assert outcomes[bad.run_id]["status"] == "failed"
    metrics = tmp_path / "results" / "runs" / good.run_id / "out" / "metrics.json"
    assert json.loads(metrics.read_text()) == {"length": 4}


def test_sweep_cases_times_grid(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "notebook: nb.ipynb\n"
        "cases:\n"
        "  - {name: none, perturbation.kind: none}\n"
        "  - {name: gauss-1, perturbation.kind: gaussian, perturbation.xi: 1.0}\n"
        "grid:\n  seed: [0, 1]\n"
    )
    runs = runner.expand_sweep(tmp_path / "s.yaml")
    assert [r.label for r in runs] == [
        {"case": "none", "perturbation.kind": "none", "seed": 0},
        {"case": "none", "perturbation.kind": "none", "seed": 1},
        {"case": "gauss-1", "perturbation.kind": "gaussian", "perturbation.xi": 1.0, "seed": 0},
        {"case": "gauss-1", "perturbation.kind": "gaussian", "perturbation.xi": 1.0, "seed": 1},
    ]
    assert runs[2].params == {"perturbation": {"kind": "gaussian", "xi": 1.0}, "seed": 0}


def test_log_progress_reads_the_latest_cell_and_output_line(tmp_path):
    log = tmp_path / "log.txt"
    assert runner.log_progress(log) == (None, "")
    log.write_text(
        "--- attempt 1\n10:00:01 Executing Cell 4---------\n10:00:02 embedding:  10%|#  | 10/100\r"
        "10:00:03 embedding:  50%|##### | 50/100\n10:00:04 Ending Cell 4------\n"
    )
    assert runner.log_progress(log) == (4, "10:00:03 embedding:  50%|##### | 50/100")
