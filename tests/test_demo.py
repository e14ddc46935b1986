"""The main job's pipeline at its smoke preset: every step runs as a notebook through the runner,
the tables and pictures land in the demo folder, and a second run skips the finished steps."""

import json

import pandas as pd
import pytest

from lafite_core import demo
from lafite_core.assets import ASSETS_DIR
from lafite_core.config import DemoConfig, from_dict
from lafite_core.params import load_params, set_dotted

pytestmark = pytest.mark.slow  # the whole demo pipeline


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
    weights = random_encoder_file(tmp_path)
    params = load_params("params/demo_smoke.yaml")
    for key, value in {
        "embed.encoder.pretrained": weights,
        "train.encoder.pretrained": weights,
        "evaluate.eval_encoder.pretrained": weights,
        "embed.cache_dir": str(tmp_path / "cache"),
        "evaluate.stats_cache": str(tmp_path / "reference"),
        "out_dir": str(tmp_path / "demo"),
        "results_root": str(tmp_path / "results"),
    }.items():
        params = set_dotted(params, key, value)
    return from_dict(DemoConfig, params)


def test_demo_smoke_pipeline_end_to_end(tmp_path, capsys):
    cfg = smoke_config(tmp_path)
    summary = demo.run_demo(cfg)
    out = tmp_path / "demo"
    assert summary == out / "summary.md"
    text = summary.read_text()
    assert "baselines" in text and "| chance |" in text

    evaluation = pd.read_csv(out / "demo_eval.csv")
    assert {"model", "real images", "shuffled conditions"} <= set(evaluation["subject"])
    assert {"test", "heldout"} <= set(evaluation["eval_split"])
    assert evaluation["num_samples"].notna().all()  # every row carries its protocol

    # the judge reads both generators, every attribute combination of each
    judged = json.loads((out / "judge.json").read_text())
    assert list(judged) == [demo.THIS_RUN, demo.SHIPPED]
    assert judged[demo.THIS_RUN]["kimg"] == pytest.approx(0.008, abs=0.002)
    shipped = judged[demo.SHIPPED]
    recorded = json.loads((ASSETS_DIR / "demo-generator.json").read_text())  # what its asset note reports
    for which in ("seen", "heldout"):
        assert shipped[which] == pytest.approx(recorded[which], abs=1e-6)
    assert f"**{demo.SHIPPED}** ({shipped['kimg']:.0f} kimg)" in text
    assert '"{colour} {shape}": both right in' in text and "| real renders | seen | t5 | red circle |" in text
    assert f"| {demo.SHIPPED} | heldout | t5 | orange circle | 6 |" in text  # every form, both generators
    for label in judged:
        assert (out / f"samples-{demo._slug(label)}.png").stat().st_size > 1000
    assert (out / "train-loss-curves.png").is_file() and (out / "train-progress-grid.png").is_file()

    # a second run finds every step done and only rewrites the summary
    capsys.readouterr()
    demo.run_demo(cfg)
    printed = capsys.readouterr().out
    assert printed.count("0 to run") == 3


def test_evaluation_table_has_arrows_a_chance_row_per_split_and_a_verdict(tmp_path):
    rows = [
        (split, subject, fid, acc)
        for split in ("test", "heldout")
        for subject, fid, acc in (("model", 0.2, 0.4), ("real images", 0.05, 0.9), ("shuffled conditions", 0.2, 0.01))
    ]
    table = pd.DataFrame(rows, columns=["eval_split", "subject", "clip_fid", "caption_accuracy"])
    table["r_precision"], table["r_precision_candidates"], table["num_samples"] = 0.3, 50, 500
    table.to_csv(tmp_path / "eval.csv", index=False)
    text = demo.headline_table(tmp_path / "eval.csv")
    assert "clip_fid ↓" in text and "caption_accuracy ↑" in text and "r_precision ↑" in text
    chance_rows = [line for line in text.splitlines() if line.startswith("| chance")]
    assert len(chance_rows) == 2 and "0.02 " in chance_rows[0]  # 1 / 50 candidates
    line = demo.eval_verdict(tmp_path / "eval.csv")
    assert line.startswith("On `heldout` prompts the model's caption_accuracy (higher is better) is 0.4 (")
    assert "real images 0.9" in line and "shuffled conditions 0.01" in line and "chance 0.00104" in line
