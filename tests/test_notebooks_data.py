"""Notebooks 00 (pre-train the encoder) and 01 (embed a dataset): a papermill run of both at a
tiny preset (their committed form: test_notebooks.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lafite_core.data import ShapesDataset
from lafite_core.data.cache import load_cache
from lafite_core.encoders import file_sha256

pytestmark = pytest.mark.slow  # notebooks run by papermill

REPO = Path(__file__).resolve().parents[1]


def test_notebooks_pretrain_then_embed_at_a_tiny_preset(tmp_path, capfd, monkeypatch):
    """Also: each bar is one output holding its final state (every refresh drawn: mininterval 0),
    and the kernel's terminal shows the steps and images with rate and ETA."""
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("TQDM_MININTERVAL", "0")  # the kernels inherit it
    pretrain_out = tmp_path / "pretrain"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "00_pretrain_encoder.ipynb"),
        str(tmp_path / "00.ipynb"),
        parameters=dict(steps=20, batch_size=16, warmup_steps=2, eval_images=40, output_dir=str(pretrain_out)),
        kernel_name="python3",
        cwd=str(REPO / "notebooks"),  # where JupyterLab starts kernels
        progress_bar=False,
    )
    metrics = json.loads((pretrain_out / "metrics.json").read_text())
    for key in ("given_others/shape", "best_caption/colour", "class_prompt/position", "matching_cosine"):
        assert isinstance(metrics[key], float)
    assert metrics["steps"] == 20 and (pretrain_out / "loss.png").is_file()
    weights = pretrain_out / "lafite-tiny-shapes.safetensors"
    assert metrics["weights_sha256"] == file_sha256(weights)

    data = {
        "kind": "shapes",
        "root": None,
        "resolution": 32,
        "size": 200,
        "seed": 0,
        "split": "train",
        "skip_bad": False,
    }
    embed_out, cache_dir = tmp_path / "embed", tmp_path / "cache"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "01_embed.ipynb"),
        str(tmp_path / "01.ipynb"),
        parameters=dict(
            data=data,
            encoder={"name": "lafite-tiny", "pretrained": str(weights)},
            cache_dir=str(cache_dir),
            batch_size=8,
            shard_size=128,
            output_dir=str(embed_out),
        ),
        kernel_name="python3",
        cwd=str(REPO / "notebooks"),  # where JupyterLab starts kernels
        progress_bar=False,
    )
    shapes = ShapesDataset(resolution=32, size=200, seed=0, split="train")
    cache = load_cache(cache_dir, dataset_fingerprint=shapes.fingerprint())
    assert cache.meta["encoder"]["weights_sha256"] == file_sha256(weights)
    assert cache.image_features.shape == (200, metrics_feature_dim(embed_out))
    summary = json.loads((embed_out / "metrics.json").read_text())
    assert summary["items"] == 200 and summary["captions"] == len(cache.captions) == 200 * len(shapes[0].captions)
    # the summary's cosine is that of each cached caption with its own image
    image = np.asarray(cache.image_features, dtype=np.float64)[np.asarray(cache.caption_item)]
    caption = np.asarray(cache.caption_features, dtype=np.float64)
    cosines = (image * caption).sum(1) / np.linalg.norm(image, axis=1) / np.linalg.norm(caption, axis=1)
    assert summary["matching_cosine_mean"] == pytest.approx(cosines.mean(), abs=1e-3)

    embed_outputs = _outputs(tmp_path / "01.ipynb")
    assert len(embed_outputs) < 50 and len(_outputs(tmp_path / "00.ipynb")) < 50
    bars = [text for text in embed_outputs if text.startswith("embedding:")]
    assert len(bars) == 1 and "200/200" in bars[0]
    terminal = capfd.readouterr().err
    assert any(line.startswith("pre-training: 100%") and "20/20" in line for line in terminal.splitlines())
    assert any(line.startswith("embedding: 100%") and "img/s" in line for line in terminal.splitlines())


def _outputs(notebook: Path) -> list[str]:
    """The text of every output of an executed notebook, one entry per output."""
    cells = json.loads(notebook.read_text())["cells"]
    return [
        "".join(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
        for c in cells
        for o in c.get("outputs", [])
    ]


def metrics_feature_dim(folder: Path) -> int:
    return json.loads((folder / "metrics.json").read_text())["feature_dim"]
