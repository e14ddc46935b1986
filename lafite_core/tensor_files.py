"""Format-tagged safetensors files: the kit's small artefacts (exported generators, modality geometry).

A `format` entry in the file's metadata tells one kind of artefact from another before any tensor
is used, and safetensors holds tensors only, so reading one never runs code.
"""

from __future__ import annotations

import json
import pickletools
import zipfile
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
        raise ValueError(
            f"parameter {parameter} = {str(path)!r} is not a weights file: it appears to be {kind}; "
            f"point it at a .safetensors or .pt file, or download or export that again"
        )
    return path


def judge_weights_file(
    path: str | Path, parameter: str, kinds: tuple[str, ...] = WEIGHTS_KINDS, code_check: bool = True
) -> Path:
    """`path` if it is a whole weights file of one of `kinds` whose pickles (if any) name only what
    torch's weights_only loader allows; else one error line naming `parameter`, what the file appears
    to be and the fix. Every loader calls this first, so a partial download, a wrong file or a
    hostile pickle never reaches a loader's own (multi-line) errors."""
    path = check_weights_file(path, parameter)
    kind = describe_file(path)
    if kind not in kinds:
        raise ValueError(
            f"parameter {parameter} = {str(path)!r} appears to be {kind}, not {' or '.join(kinds)}; "
            f"point it at the right file"
        )
    problem = _incomplete(path, kind)
    if problem:
        raise ValueError(
            f"parameter {parameter} = {str(path)!r} appears to be {kind} but is incomplete ({problem}): "
            f"a partial download or copy; download or export it again"
        )
    refused = _code_in_pickles(path, kind) if code_check else None
    if refused:
        raise ValueError(
            f"parameter {parameter} = {str(path)!r} was refused: {kind} that calls {refused}, which is not "
            f"plain tensor data (nothing from it was run); use weights saved as a state dict or safetensors"
        )
    return path


def _incomplete(path: Path, kind: str) -> str | None:
    """Why a file of `kind` cannot be whole (its own structure disagrees with its length), or None."""
    size = path.stat().st_size
    if kind == "a safetensors file":
        return _incomplete_safetensors(path, size)
    if kind == _ZIP:
        try:
            with zipfile.ZipFile(path) as archive:
                end = max(
                    (i.header_offset + 30 + len(i.filename) + i.compress_size for i in archive.infolist()), default=0
                )
        except (zipfile.BadZipFile, OSError, ValueError):
            return "its zip directory is missing or damaged"
        return f"its entries need {end} bytes, the file holds {size}" if end > size else None
    if kind == "a Python pickle":
        with open(path, "rb") as f:
            return _pickle_problem(f.read())[0]
    return None


def _incomplete_safetensors(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if 8 + header_len > size:
            return f"its header needs {8 + header_len} bytes, the file holds {size}"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return "its header is not whole"
    ends = [e["data_offsets"][1] for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)]
    needed = 8 + header_len + max(ends, default=0)
    return f"its tensors need {needed} bytes, the file holds {size}" if needed > size else None


def _pickle_problem(data: bytes) -> tuple[str | None, list[str]]:
    """(why the pickle in `data` is not whole, or None; the globals it names, as module.name).
    STACK_GLOBAL takes its names from the two strings pushed (or fetched from the memo) before it."""
    named, strings, memo = [], [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                named.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL":
                named.append(".".join(map(str, strings[-2:])))
            elif op.name in ("INST", "OBJ"):
                named.append(f"{op.name} {arg or ''}".strip())
            elif isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
            elif op.name == "MEMOIZE":
                memo.append(strings[-1] if strings else None)
            elif op.name.endswith("GET") and isinstance(arg, int) and arg < len(memo):
                strings.append(memo[arg])
    except ValueError as err:  # genops' "pickle exhausted before seeing STOP", a bad opcode, ...
        return f"its pickle stops early: {str(err).splitlines()[0][:80]}", named
    return None, named


def _code_in_pickles(path: Path, kind: str) -> str | None:
    """The first global a pickle in the file names that weights_only loading does not allow."""
    if kind == _ZIP:
        with zipfile.ZipFile(path) as archive:
            pickles = [archive.read(n) for n in archive.namelist() if n.endswith(".pkl")]
    elif kind == "a Python pickle":
        pickles = [path.read_bytes()]
    else:
        return None
    allowed = _allowed_globals()
    for data in pickles:
        problem, named = _pickle_problem(data)
        if problem:
            return f"nothing readable ({problem})"
        refused = [g for g in named if g not in allowed]
        if refused:
            return refused[0]
    return None


def _allowed_globals() -> set[str]:
    """What torch.load(weights_only=True) accepts: its built-in list plus torch's user-added safe globals."""
    from torch import _weights_only_unpickler as unpickler

    allowed = set(unpickler._get_allowed_globals()) | set(unpickler._get_user_allowed_globals())
    return allowed


def refusal_reason(err: Exception) -> str:
    """The useful line of a weights_only refusal or a load error (torch's first line is advice)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    named = [ln for ln in lines if any(w in ln.lower() for w in ("unsupported", "missing key", "unexpected key"))]
    return ((named or lines or [type(err).__name__])[0])[:200]
