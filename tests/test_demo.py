"""The main job's pipeline at its smoke preset: every step runs as a notebook through the runner,
the tables and pictures land in the demo folder, and a second run skips the finished steps."""
import json

import pandas as pd

from lafite_core import demo, runner
from lafite_core.config import DemoConfig, from_dict


def random_encoder_file(tmp_path):
    """A randomly initialised tiny encoder saved as a weights file: the pipeline needs an encoder
    with an identity (the sampler refuses unidentifiable ones), not a trained one."""
    from lafite_core.config import EncoderConfig
    from lafite_core.encoder_training import save_weights
    from lafite_core.encoders import load_encoder

    path = tmp_path / "random-tiny.safetensors"
    save_weights(load_encoder(EncoderConfig(name="lafite-tiny", pretrained=None)).model, path)
    return str(path)


def smoke_config(tmp_path) -> DemoConfig:
    params = runner.load_params("params/demo_smoke.yaml")
    weights = random_encoder_file(tmp_path)
    params["embed"]["encoder"]["pretrained"] = weights
    params["train"]["encoder"]["pretrained"] = weights
    params["evaluate"]["eval_encoder"]["pretrained"] = weights
    params["embed"]["cache_dir"] = str(tmp_path / "cache")
    params["evaluate"]["stats_cache"] = str(tmp_path / "reference")
    params["out_dir"] = str(tmp_path / "demo")
    params["results_root"] = str(tmp_path / "results")
    return from_dict(DemoConfig, params)


def test_demo_smoke_pipeline_end_to_end(tmp_path, capsys):
    cfg = smoke_config(tmp_path)
    summary = demo.run_demo(cfg)
    out = tmp_path / "demo"
    assert summary == out / "summary.md"
    text = summary.read_text()
    assert "baselines" in text and "ablation" in text

    evaluation = pd.read_csv(out / "demo_eval.csv")
    assert {"model", "real images", "shuffled conditions"} <= set(evaluation["subject"])
    assert {"test", "heldout"} <= set(evaluation["eval_split"])
    assert evaluation["num_samples"].notna().all()  # every row carries its protocol

    ablation = pd.read_csv(out / "ablation.csv")
    assert set(ablation["case"]) == {"none", "official"}
    assert (ablation["status"] == "done").all()
    assert ablation["test/caption_accuracy"].between(0, 1).all()
    for picture in ("samples.png", "ablation.png"):
        assert (out / picture).stat().st_size > 1000

    # a second run finds every step done and only rewrites the summary
    capsys.readouterr()
    demo.run_demo(cfg)
    printed = capsys.readouterr().out
    assert printed.count("0 to run") == 4
    assert json.loads((out / "summary.json").read_text())["ablation_runs"] == [s.run_id for s in demo.ablation_specs(cfg)]
