"""Checkpoint files: the full training state as plain tensors, written atomically.

Why not pickles of modules (as the official code does)? A pickle embeds code, so an old checkpoint
breaks when the code changes and loading one runs arbitrary code. Here a checkpoint is a dict of
tensors, numbers, strings, lists and dicts only; `torch.load(weights_only=True)` reads it without
executing anything, and the networks are rebuilt from the config stored inside it as JSON.

Files are named `checkpoint-<images seen, 10 digits>.pt` in one folder. A write goes to a hidden
temporary file in the same folder, is flushed to disk, then renamed over the final name
(`os.replace` is atomic on POSIX and Windows): a process killed mid-write leaves only a temporary
file, which `list_checkpoints` ignores, so the last complete checkpoint is always the newest listed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from lafite_core.tensor_files import judge_weights_file, refusal_reason

FORMAT = "lafite-checkpoint-v1"
_NAME = re.compile(r"^checkpoint-(\d{10})\.pt$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(nimg: int) -> str:
    """File name for the state after `nimg` training images."""
    return f"checkpoint-{nimg:010d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | Path) -> Path | None:
    checkpoints = list_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(state: dict[str, Any], folder: str | Path, nimg: int, keep_last: int | None = None) -> Path:
    """Write `state` atomically as checkpoint-<nimg>.pt; then delete all but the newest `keep_last`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / checkpoint_name(nimg)
    tmp = folder / f"{_TMP_PREFIX}{path.name}.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(folder)
    if keep_last is not None:
        for old in list_checkpoints(folder)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files left by a writer that was killed; returns what was removed."""
    folder = Path(folder)
    stale = [p for p in folder.glob(f"{_TMP_PREFIX}*")] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", parameter: str = "checkpoint"
) -> dict[str, Any]:
    """Read a checkpoint without executing code (weights_only=True) and check its format tag; a
    missing, cut-short, foreign or hostile file is one error line naming `parameter`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter {parameter} = {str(path)!r}: no such checkpoint file")
    judge_weights_file(path, parameter)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(
            f"parameter {parameter} = {str(path)!r} is not a readable checkpoint ({refusal_reason(err)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"parameter {parameter} = {str(path)!r} is not a {FORMAT} file (format: {found!r})")
    return state


def to_json_string(obj: Any) -> str:
    """Configs and identities travel inside checkpoints as JSON text (weights_only can read str)."""
    return json.dumps(obj, sort_keys=True)


def from_json_string(text: str) -> Any:
    return json.loads(text)


def module_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state dict (safe to save while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------- RNG state
def capture_rng(device: torch.device | str) -> dict[str, torch.Tensor]:
    """Global RNG states this process draws from (CPU, plus the CUDA device in use)."""
    state = {"cpu": torch.get_rng_state()}
    device = torch.device(device)
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], device: torch.device | str) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    device = torch.device(device)
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
