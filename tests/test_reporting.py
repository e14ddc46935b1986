"""Results for reading: arrows and chance levels, the ablation table without internal keys, a
verdict line, and plots whose legend covers no panel."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lafite_core.reporting import (
    attribute_chance,
    better,
    chance,
    readable_table,
    sweep_figure,
    sweep_markdown,
    verdict,
    with_arrow,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ablation() -> pd.DataFrame:
    """A sweep table as runner.collect gathers it: labels, descriptive keys, metrics, spreads."""
    return pd.DataFrame(
        {
            "run_id": ["a1", "b2", "c3"],
            "case": ["none", "gaussian-xi1", "official"],
            "train.perturbation.kind": ["none", "gaussian", "official"],
            "status": ["done"] * 3,
            "perturbation": ["none", "gaussian", "official"],
            "xi": [None, 1.0, None],
            "test/clip_fid": [0.12, 0.17, 0.36],
            "test/clip_kid_std": [1e-5] * 3,
            "test/r_precision": [0.56, 0.46, 0.08],
            "heldout/r_precision": [0.35, 0.29, 0.08],
            "heldout/caption_accuracy": [0.125, 0.02, 0.0035],
            "heldout/acc_shape": [0.4, 0.3, 0.2],
        }
    )


def test_directions_and_chance_levels():
    assert better("heldout/clip_fid") == "lower" and better("test/r_precision") == "higher"
    assert better("xi") is None and with_arrow("test/clip_score") == "test/clip_score ↑"
    assert chance("test/r_precision", candidates=50) == pytest.approx(0.02)
    assert chance("heldout/acc_colour") == pytest.approx(attribute_chance()["colour"])
    assert chance("test/clip_fid") is None
    assert better("seen/kimg_to_shape0.6") == better("heldout/minutes_to_all0.85") == "lower"
    assert chance("seen/kimg_to_shape0.6") is None and chance("seen/acc_all") == pytest.approx(
        attribute_chance()["all"]
    )


def test_a_recipe_sweep_reads_as_accuracy_and_time_to_the_shape_bar():
    recipe = pd.DataFrame(
        {
            "run_id": ["a", "b"],
            "case": ["default", "batch32"],
            "status": ["done"] * 2,
            "seen/acc_shape": [0.5, 0.7],
            "seen/acc_colour": [1.0, 1.0],
            "seen/acc_all": [0.45, 0.66],
            "seen/kimg_to_shape0.6": [None, 35.0],
            "seen/kimg_to_colour0.95": [20.0, 20.0],
            "img_per_s": [50.0, 60.0],
        }
    )
    table = readable_table(recipe)
    assert list(table.columns) == ["case", "seen/acc_shape ↑", "seen/acc_all ↑", "seen/kimg_to_shape0.6 ↓"]
    assert verdict(recipe).startswith("Best on seen/acc_all (higher is better): batch32 with 0.66")


def test_readable_table_shows_the_case_and_its_metrics_with_a_chance_row(ablation):
    table = readable_table(ablation)
    assert list(table.columns) == [
        "case",
        "test/clip_fid ↓",
        "test/r_precision ↑",
        "heldout/r_precision ↑",
        "heldout/caption_accuracy ↑",
        "heldout/acc_shape ↑",
    ]
    assert list(table["case"]) == ["chance", "none", "gaussian-xi1", "official"]
    assert table.loc[0, "test/r_precision ↑"] == pytest.approx(0.01) and pd.isna(table.loc[0, "test/clip_fid ↓"])


def test_verdict_names_the_best_case_on_held_out_prompts_against_chance(ablation):
    line = verdict(ablation)
    assert line.startswith("Best on heldout/caption_accuracy (higher is better): none with 0.125, chance 0.00104")
    assert "worst official" in line
    assert sweep_markdown(ablation).startswith(line + "\n\n| case ")


def test_every_panel_has_a_y_label_with_its_direction_and_the_legend_names_splits_and_chance(ablation):
    fig = sweep_figure(ablation)
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_ylabel() for ax in panels] == ["clip_fid ↓", "r_precision ↑", "caption_accuracy ↑", "acc_shape ↑"]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["test", "heldout", "chance"]
    chance_lines = [line for ax in panels for line in ax.lines if line.get_linestyle() == "--"]
    assert len(chance_lines) == 3  # r_precision, caption_accuracy and acc_shape have a chance level, clip_fid none


def test_the_committed_ablation_table_is_the_readable_one():
    table = pd.read_csv(REPO / "results" / "ablation.csv")
    assert (REPO / "results" / "ablation.md").read_text() == sweep_markdown(table)
