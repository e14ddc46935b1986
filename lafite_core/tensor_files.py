"""Format-tagged safetensors files: the kit's small artefacts (exported generators, modality geometry).

A `format` entry in the file's metadata tells one kind of artefact from another before any tensor
is used, and safetensors holds tensors only, so reading one never runs code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


def read_tagged_safetensors(path: str | Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file whose metadata says `format: fmt`."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
    if meta.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} file (format: {meta.get('format')!r})")
    return tensors, meta
