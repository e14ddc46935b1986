"""notebooks/05_sample.ipynb and its widgets: the committed form, a papermill run with a prompt
parameter that saves a grid, and the UI's callbacks driven from Python (no browser; see
test_browser.py for the real one)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_sampler import make_run  # a small generator with its own saved encoder

from lafite_core.config import SampleConfig
from lafite_core.params import load_yaml

pytestmark = pytest.mark.slow  # the sample notebook and its UI on trained runs

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "05_sample.ipynb"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_sample_params_open_the_default_checkpoint_with_several_prompts():
    params = load_yaml(REPO / "params" / "sample.yaml", SampleConfig)
    assert params.checkpoint == SampleConfig().checkpoint and len(params.prompts) >= 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A runs folder holding one run with a checkpoint."""
    folder = tmp_path_factory.mktemp("runs")
    make_run(folder / "tiny-run")
    return folder


def test_papermill_run_with_a_prompt_saves_a_grid(runs, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "samples"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "05.ipynb"),
        parameters=dict(
            checkpoint=str(runs / "tiny-run"),
            prompts=["a red star", "a blue square"],
            n=3,
            seed=4,
            scale=2,
            runs_dir=str(runs),
            out_dir=str(out),
        ),
        kernel_name="python3",
        cwd=str(REPO / "notebooks"),  # where JupyterLab starts kernels
        progress_bar=False,
    )
    grid = Image.open(out / "grid.png")
    resolution = json.loads((out / "metrics.json").read_text())["resolution"]
    assert grid.width == 3 * 2 * resolution and grid.height > 2 * 2 * resolution  # 2 rows + caption bands
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["prompts"] == ["a red star", "a blue square"] and summary["images"] == 6
    executed = json.loads((tmp_path / "05.ipynb").read_text())
    ui_output = executed["cells"][-1]["outputs"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in ui_output)


# ------------------------------------------------------------------------------ widgets
@pytest.fixture(scope="module")
def ui(runs, tmp_path_factory):
    pytest.importorskip("ipywidgets")
    from lafite_core.sampler_ui import SamplerUI

    out = tmp_path_factory.mktemp("saved")
    return SamplerUI(checkpoint=str(runs / "tiny-run"), n=4, scale=2, runs_dir=str(runs), out_dir=str(out))


def _png(value: bytes) -> np.ndarray:
    assert value[:8] == PNG_SIGNATURE
    return np.asarray(Image.open(io.BytesIO(value)).convert("RGB"))


def test_menu_lists_the_runs_and_selects_the_given_one(ui, runs):
    assert ("run: tiny-run", str(runs / "tiny-run")) in ui.checkpoint.options
    assert ui.checkpoint.value == str(runs / "tiny-run")  # the given path matched to its menu entry
    assert not any(label.startswith("given:") for label, _ in ui.checkpoint.options)
    assert "generator loaded" in ui.status.value  # loaded when the UI was built


def test_generate_shows_a_png_grid_of_the_prompt(ui):
    ui.prompt.value = "a green triangle"
    ui.seed.value = 3
    ui.generate_button.click()  # the same path as a click in the browser
    picture = _png(ui.image.value)
    tile = 2 * ui.sampler().resolution
    assert picture.shape == (tile, 4 * tile, 3)  # 4 images in one row
    assert "4 images in" in ui.status.value
    expected = ui.sampler().generate("a green triangle", n=4, seed=3)
    first = ((expected[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(picture[:tile:2, :tile:2], first)


def test_empty_prompt_is_reported_and_keeps_the_grid(ui):
    ui.prompt.value = "a red circle"
    ui.on_generate()
    before = ui.image.value
    ui.prompt.value = "   "
    ui.on_generate()
    assert "empty" in ui.status.value and "#b00020" in ui.status.value
    assert ui.image.value == before
    assert "an earlier request" in ui.caption.value and "a red circle" in ui.caption.value  # labelled stale
    ui.prompt.value = "a blue square"
    ui.on_generate()
    assert "earlier request" not in ui.caption.value and "a blue square" in ui.caption.value


def test_enter_in_the_prompt_box_generates_and_the_button_is_disabled_meanwhile(ui, monkeypatch):
    seen = []
    original = ui.sampler().generate

    def generate(*args, **kwargs):
        seen.append((ui.generate_button.disabled, ui.generate_button.description))
        return original(*args, **kwargs)

    monkeypatch.setattr(ui.sampler(), "generate", generate)
    ui.image.value = b""
    ui.prompt.value = "a green circle"
    ui.prompt._handle_string_msg(None, {"event": "submit"}, [])  # what the browser sends on Enter
    assert seen == [(True, "Working...")] and ui.image.value[:8] == PNG_SIGNATURE
    assert not ui.generate_button.disabled and ui.generate_button.description == "Generate"


def test_layout_puts_the_status_beside_generate_and_caps_the_grid(ui):
    top = ui.widget.children[0]
    assert list(top.children) == [ui.prompt, ui.generate_button, ui.status]
    box = next(c for c in ui.widget.children if ui.image in getattr(c, "children", ()))
    assert box.layout.max_height and box.layout.overflow == "auto"


def test_a_prompt_cut_at_the_context_gets_a_notice(ui):
    ui.prompt.value = " ".join(["a small red triangle in the top left corner"] * 4)
    ui.on_generate()
    assert "more than the encoder's context" in ui.notice.value and "4 images in" in ui.status.value
    ui.prompt.value = "a red circle"
    ui.on_generate()
    assert ui.notice.value == ""


def test_example_prompts_are_buttons_that_type_and_draw(ui):
    from lafite_core.sampler import GENERIC_EXAMPLE_PROMPTS

    assert [b.description for b in ui.examples.children] == list(GENERIC_EXAMPLE_PROMPTS)
    assert ui.vocabulary.value == ""  # an encoder of its own: no closed vocabulary to show
    ui.image.value = b""
    ui.examples.children[1].click()
    assert ui.prompt.value == GENERIC_EXAMPLE_PROMPTS[1] and ui.image.value[:8] == PNG_SIGNATURE
    assert GENERIC_EXAMPLE_PROMPTS[1] in ui.caption.value


def test_the_shipped_generator_shows_the_shapes_vocabulary_and_warns_of_a_white_background(tmp_path):
    from lafite_core.data.shapes import VOCABULARIES, example_prompts
    from lafite_core.sampler import DEMO_GENERATOR
    from lafite_core.sampler_ui import SamplerUI

    ui = SamplerUI(checkpoint=str(DEMO_GENERATOR), n=2, runs_dir=str(tmp_path), out_dir=str(tmp_path))
    assert all(word in ui.vocabulary.value for words in VOCABULARIES.values() for word in words)
    assert [b.description for b in ui.examples.children] == example_prompts()
    ui.prompt.value = "a red circle on a white background"
    ui.on_generate()
    assert "backgrounds are black or gray" in ui.notice.value and "2 images in" in ui.status.value


def test_slider_interpolates_between_the_two_prompts(ui):
    ui.prompt.value, ui.prompt_b.value = "a red circle", "a blue square"
    ui.t.value = 0.0 if ui.t.value != 0.0 else 0.05  # a change fires the observer
    ui.t.value = 0.0
    start = _png(ui.interp_image.value)
    ui.on_generate()
    assert _close(start, _png(ui.image.value))  # Mix 0 = the first prompt's grid
    ui.t.value = 1.0
    end = _png(ui.interp_image.value)
    ui.prompt.value = "a blue square"
    ui.on_generate()
    assert _close(end, _png(ui.image.value))  # Mix 1 = the second prompt's grid
    assert not _close(start, end)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to one grey level (re-normalising a unit condition moves the last float bit)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_save_writes_the_grids_and_their_settings(ui):
    ui.prompt.value = "a yellow star"
    ui.on_generate()
    paths = ui.on_save()
    grid = [p for p in paths if "-grid-" in p.name]
    assert len(grid) == 1 and grid[0].parent == ui.out_dir
    np.testing.assert_array_equal(np.asarray(Image.open(grid[0]).convert("RGB")), _png(ui.image.value))
    settings = json.loads(grid[0].with_suffix(".json").read_text())
    assert settings["prompt"] == "a yellow star" and settings["n"] == 4
    assert "saved" in ui.status.value


def test_missing_checkpoint_is_reported_in_the_status(tmp_path):
    pytest.importorskip("ipywidgets")
    from lafite_core.sampler_ui import SamplerUI

    ui = SamplerUI(checkpoint=str(tmp_path / "gone.safetensors"), runs_dir=str(tmp_path), out_dir=str(tmp_path))
    assert "generator not found" in ui.status.value
    ui.status.value = ""
    ui.on_generate()
    assert "generator not found" in ui.status.value and ui.image.value == b""
    assert ui.on_save() == [] and "nothing to save" in ui.status.value
