"""Read the authors' snapshot pickles as data, without running anything stored in them.

The authors' code pickles its networks with a "persistence" mechanism: each module is saved as a
call `torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta` holds the module's
source code and its `__dict__`. An ordinary `pickle.load` imports the authors' `torch_utils` and
executes that source; a crafted file could run anything. This unpickler resolves only the few
globals such a snapshot needs, each to a function written here:

- the persistence call becomes a `PersistentObject`: the class name and the module's state
  (parameters, buffers, submodules, plain attributes); the source is kept as text, never run;
- tensors are rebuilt from their storages, and storages are read with `torch.load(weights_only=True)`;
- `collections.OrderedDict` and numpy's `dtype` and `scalar` (the float attributes) are data types;
- `dnnlib.util.EasyDict`, a dict with attribute access in which the authors' training script passes
  constructor arguments (so it sits in every module's `_init_kwargs`), is read as a plain dict.

Every other global, and every persistent id, is refused before it is called, with an error that
names it. Nothing here imports the authors' `dnnlib` or `torch_utils`.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from lafite_core.tensor_files import refusal_reason

PERSISTENT_META_KEYS = {"type", "version", "module_src", "class_name", "state"}


class RefusedPickle(pickle.UnpicklingError, ValueError):
    """The file asks for something this unpickler does not allow; nothing from it was run.
    A ValueError too, so command lines report it as bad input."""


@dataclasses.dataclass(frozen=True, eq=False)
class PersistentObject:
    """A module from the authors' persistence pickle: its class name and `__dict__`, as data."""

    class_name: str
    state: dict
    module_src: str  # the stored source code; kept as text only

    def children(self) -> dict[str, PersistentObject | None]:
        return dict(self.state.get("_modules") or {})

    def tensors(self) -> dict[str, torch.Tensor]:
        """This module's own parameters and persistent buffers (no submodules)."""
        transient = set(self.state.get("_non_persistent_buffers_set") or ())
        found = {k: v for k, v in (self.state.get("_parameters") or {}).items() if v is not None}
        found.update(
            {k: v for k, v in (self.state.get("_buffers") or {}).items() if v is not None and k not in transient}
        )
        return found


def _persistent_object(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or set(meta) != PERSISTENT_META_KEYS:
        keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise RefusedPickle(
            f"a persistent object's meta must be a dict with keys {sorted(PERSISTENT_META_KEYS)}, got {keys}"
        )
    if meta["type"] != "class" or not isinstance(meta["class_name"], str) or not isinstance(meta["state"], dict):
        raise RefusedPickle(f"unsupported persistent object (type {meta['type']!r}, class {meta['class_name']!r})")
    return PersistentObject(meta["class_name"], meta["state"], str(meta["module_src"]))


def _load_storage(data: Any) -> torch.storage.TypedStorage:
    if not isinstance(data, bytes):
        raise RefusedPickle(f"a tensor storage must be bytes, got {type(data).__name__}")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True)
    except pickle.UnpicklingError as err:
        raise RefusedPickle(f"a tensor storage holds more than tensor data ({refusal_reason(err)})") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise RefusedPickle(f"a tensor storage decoded to {type(storage).__name__}")
    return storage


def _no_hooks(hooks: Any) -> None:
    if hooks:
        raise RefusedPickle("tensors with backward hooks are refused")


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise RefusedPickle(f"a tensor must be built from a storage, got {type(storage).__name__}")
    _no_hooks(backward_hooks)
    return torch._utils._rebuild_tensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, torch.Tensor):
        raise RefusedPickle(f"a parameter must wrap a tensor, got {type(data).__name__}")
    _no_hooks(backward_hooks)
    return data.detach()


def _numpy_dtype(*args) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise RefusedPickle("numpy object dtypes are refused")
    return dtype


def _numpy_scalar(dtype: Any, data: Any = None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise RefusedPickle("numpy scalars must be plain numbers")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_object,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("dnnlib.util", "EasyDict"): dict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only ALLOWED_GLOBALS, to the safe functions above."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"refused global {module}.{name}: a LAFITE snapshot needs only "
                f"{', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))}"
            ) from None

    def persistent_load(self, pid):
        raise RefusedPickle(f"refused persistent id {pid!r}: snapshot pickles have none")


def load(source: str | Path | BinaryIO) -> Any:
    """Unpickle a file (or open binary stream) with RestrictedUnpickler.

    Raises RefusedPickle for anything not allowed and ValueError for a file that is not a whole
    pickle, each naming the file."""
    name = getattr(source, "name", source)
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as f:
                return RestrictedUnpickler(f).load()
        return RestrictedUnpickler(source).load()
    except RefusedPickle as err:
        raise RefusedPickle(f"{name}: {err}; nothing from the file was run") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as err:
        if _starts_with(source, b"PK"):
            raise ValueError(f"{name} is a zip archive (a torch.save file?), not a snapshot pickle") from None
        raise ValueError(f"{name} is truncated or not a pickle ({type(err).__name__}: {refusal_reason(err)})") from None


def _starts_with(source: Any, prefix: bytes) -> bool:
    if not isinstance(source, (str, Path)):
        return False
    with open(source, "rb") as f:
        return f.read(len(prefix)) == prefix
