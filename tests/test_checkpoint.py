"""Checkpoint files: plain-tensor format, atomic writes, keep-last-N, RNG state round trip."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from lafite_core.checkpoint import (
    capture_rng,
    checkpoint_name,
    from_json_string,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    module_state,
    remove_stale_temporaries,
    restore_rng,
    save_checkpoint,
    to_json_string,
)

REPO = Path(__file__).resolve().parents[1]


def _state(value: float) -> dict:
    layer = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(layer.weight, value)
    return {"G": module_state(layer), "step": 7, "kimg": 0.5, "config": to_json_string({"a": [1, 2]})}


def test_round_trip_with_weights_only(tmp_path):
    path = save_checkpoint(_state(1.5), tmp_path, nimg=512)
    assert path.name == checkpoint_name(512) == "checkpoint-0000000512.pt"
    state = load_checkpoint(path)
    assert torch.equal(state["G"]["weight"], torch.full((2, 3), 1.5))
    assert state["step"] == 7 and state["kimg"] == 0.5
    assert from_json_string(state["config"]) == {"a": [1, 2]}


def test_keep_last_n_and_latest(tmp_path):
    for nimg in (16, 32, 48, 64):
        save_checkpoint(_state(nimg), tmp_path, nimg=nimg, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [checkpoint_name(48), checkpoint_name(64)]
    assert latest_checkpoint(tmp_path).name == checkpoint_name(64)
    assert latest_checkpoint(tmp_path / "missing") is None


def test_partial_temporary_file_is_ignored(tmp_path):
    save_checkpoint(_state(1.0), tmp_path, nimg=16)
    (tmp_path / f".tmp-{checkpoint_name(32)}.123").write_bytes(b"PK\x03\x04 half a zip")
    assert latest_checkpoint(tmp_path).name == checkpoint_name(16)
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [f".tmp-{checkpoint_name(32)}.123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(16)]


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / checkpoint_name(16)
    path.write_bytes(pickle.dumps({"format": "lafite-checkpoint-v1", "x": Evil()}, protocol=2))
    with pytest.raises(ValueError, match="was refused: a Python pickle that calls posix.system"):
        load_checkpoint(path)


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def test_rng_round_trip():
    torch.manual_seed(3)
    saved = capture_rng("cpu")
    first = torch.randn(5)
    torch.randn(100)
    restore_rng(saved, "cpu")
    assert torch.equal(torch.randn(5), first)
