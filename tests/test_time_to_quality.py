"""Time to quality: training time per checkpoint, first crossings, the sweep row, and one judged run."""

import json

import pandas as pd
import pytest
from training_fixtures import TinyImageTextSet, tiny_config

from lafite_core import time_to_quality as ttq, training
from lafite_core.config import TimeToQualityConfig, TrainConfig
from lafite_core.prompt_following import ATTRIBUTES


def _rows(run="r"):
    """Three judged checkpoints per split: shape crosses 0.6 at 20 kimg, 0.9 (and all 0.85) at 30;
    "{colour} {shape}" is named right 0.9 of the time from 20 kimg, and "a {shape}" (seen only) never."""
    rows = []
    for which, lag in (("seen", 0.0), ("heldout", 0.2)):
        for kimg, minutes, shape, everything in ((10, 1.0, 0.5, 0.1), (20, 2.0, 0.7, 0.5), (30, 3.0, 0.95, 0.9)):
            attributes = {a: 1.0 for a in ATTRIBUTES} | {"shape": shape - lag, "all": everything - lag}
            short = {"named_t5": 0.9 if kimg >= 20 else 0.3, "named_a_shape": 0.5 if which == "seen" else None}
            rows.append({"run": run, "kimg": kimg, "minutes": minutes, "prompts": which, **attributes, **short})
    return rows


def test_training_minutes_add_each_ticks_time(tmp_path):
    ticks = [{"nimg": 1000, "kimg": 1.0, "s_per_kimg": 60.0}, {"nimg": 3000, "kimg": 3.0, "s_per_kimg": 30.0}]
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    assert ttq.training_minutes(tmp_path) == {1000: pytest.approx(1.0), 3000: pytest.approx(2.0)}


def test_first_reached_names_the_first_checkpoint_over_each_bar():
    reached = ttq.first_reached(pd.DataFrame(_rows())).set_index("prompts")
    assert reached.loc["seen", "shape >= 0.6"] == "20 kimg / 2.0 min"
    assert reached.loc["seen", "shape >= 0.9"] == reached.loc["seen", "all >= 0.85"] == "30 kimg / 3.0 min"
    assert reached.loc["seen", "colour >= 0.95"] == "10 kimg / 1.0 min"
    assert reached.loc["heldout", "shape >= 0.6"] == "30 kimg / 3.0 min"
    assert reached.loc["heldout", "shape >= 0.9"] == ""  # 0.75 at the end: never
    assert reached.loc["heldout", "named_t5 >= 0.9"] == "20 kimg / 2.0 min"
    assert reached.loc["seen", "named_a_shape >= 0.9"] == reached.loc["heldout", "named_a_shape >= 0.9"] == ""
    assert reached.loc["seen", "spread_ratio_t5 >= 0.8"] == ""  # a figure the rows lack: never


def test_summary_is_the_last_checkpoint_and_the_crossings_per_split(tmp_path):
    ticks = [{"img_per_s": s} for s in (40.0, 50.0, 70.0)]
    (tmp_path / "stats.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    row = ttq.summary(pd.DataFrame(_rows()), tmp_path)
    assert row["seen/acc_shape"] == pytest.approx(0.95) and row["heldout/acc_shape"] == pytest.approx(0.75)
    assert row["seen/kimg_to_shape0.6"] == 20 and row["seen/minutes_to_shape0.6"] == 2.0
    assert row["heldout/kimg_to_shape0.6"] == 30 and row["heldout/kimg_to_shape0.9"] is None
    assert row["kimg"] == 30 and row["minutes"] == 3.0 and row["img_per_s"] == 50.0
    assert row["seen/named_t5"] == 0.9 and row["seen/named_a_shape"] == 0.5 and row["heldout/named_a_shape"] is None
    assert row["heldout/kimg_to_named_t50.9"] == 20


def test_run_label_is_the_sweep_case_for_a_runner_folder(tmp_path):
    train_dir = tmp_path / "runs" / "06_time_to_quality-abc" / "out" / "train"
    train_dir.mkdir(parents=True)
    assert ttq.run_label(train_dir) == "train"
    (train_dir.parent.parent / "spec.json").write_text(json.dumps({"label": {"case": "batch32"}}))
    assert ttq.run_label(train_dir) == "batch32"


def test_train_and_judge_keeps_and_judges_every_snapshot_once(tmp_path, monkeypatch, small_judge):
    """A tiny run with three snapshots: each is judged once (again only when new), and the curve and
    metrics.json describe all of them."""
    dataset = TinyImageTextSet()
    monkeypatch.setattr(ttq, "train", lambda cfg: training.train(cfg, dataset))
    cfg = TimeToQualityConfig(
        train=tiny_config(  # the shipped encoder, so that the judge's prompts can be encoded
            tmp_path / "ignored", encoder=TrainConfig().encoder, total_kimg=0.012, tick_kimg=0.004, keep_last=1
        ),
        output_dir=str(tmp_path / "out"),
    )
    metrics = ttq.train_and_judge(cfg)
    judged = (tmp_path / "out" / "train" / "judge.jsonl").read_text().splitlines()
    assert len(judged) == 3  # keep_last=1 asked for, every snapshot kept
    curve = pd.read_csv(tmp_path / "out" / "curve.csv")
    assert sorted(curve.kimg.unique()) == pytest.approx([0.004, 0.008, 0.012])
    assert (tmp_path / "out" / "curve.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == pytest.approx(metrics, nan_ok=True)
    assert metrics["kimg"] == pytest.approx(0.012) and 0.0 <= metrics["seen/acc_shape"] <= 1.0
    assert 0.0 <= metrics["seen/named_t5"] <= 1.0 and 0.0 <= metrics["heldout/confidence"] <= 1.0
    assert {"named_t5", "named_a_shape", "spread_ratio_t5", "confidence"} <= set(curve.columns)

    def no_judging(*args, **kwargs):
        raise AssertionError("a judged checkpoint was judged again")

    monkeypatch.setattr(ttq, "judge", no_judging)
    again = ttq.report([tmp_path / "out" / "train"], tmp_path / "again")
    assert len(again) == 6  # three checkpoints, two splits, all from judge.jsonl
