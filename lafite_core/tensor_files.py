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


# What the first bytes of a file say it is, for errors that name a wrong file instead of failing
# inside a loader with an unpickling traceback.
_ZIP = "a zip archive (a PyTorch checkpoint or another zip)"
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", _ZIP),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x93NUMPY", "a NumPy array (.npy)"),
    (b"version https://git-lfs", "a Git LFS pointer (the real file was never downloaded)"),
)
WEIGHTS_KINDS = ("a safetensors file", _ZIP, "a Python pickle")


def describe_file(path: str | Path) -> str:
    """What a file appears to be, judged from its first bytes (never by loading it)."""
    path = Path(path)
    if path.is_dir():
        return "a folder"
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        return "an empty file"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown format"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"text (starting {first!r})"


def check_weights_file(path: str | Path, parameter: str) -> Path:
    """`path` if it exists and looks like weights (safetensors, a PyTorch zip or pickle), else an
    error naming `parameter` and what the file appears to be."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parameter {parameter} = {str(path)!r}: no such file")
    kind = describe_file(path)
    if kind not in WEIGHTS_KINDS:
        raise ValueError(f"parameter {parameter} = {str(path)!r} is not a weights file: it appears to be {kind}")
    return path


def refusal_reason(err: Exception) -> str:
    """The useful line of a weights_only refusal or a load error (torch's first line is advice)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    named = [ln for ln in lines if "Unsupported" in ln or "Missing key" in ln or "Unexpected key" in ln]
    return ((named or lines or [type(err).__name__])[0])[:200]
