"""An optional torch.compile that falls back to eager execution where compiling is unavailable.

torch.compile is lazy: a missing C++ compiler or an op the backend cannot lower only shows at the
first call. So the compiled callable is tried at every call; on a compilation error the wrapper
warns once and calls the eager function from then on. A module is wrapped, never compiled in
place, so its parameters and state_dict keys (what checkpoints save) stay those of the eager module.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch._dynamo.exc import TorchDynamoException


class CompileUnavailableWarning(UserWarning):
    """torch.compile failed here; the computation runs eagerly (same results, eager speed)."""


def compile_or_eager(fn: Callable, enabled: bool, what: str) -> Callable:
    """torch.compile(fn) (inductor, default mode) if `enabled`, else `fn` itself; `what` names fn
    in the one warning given when compiling turns out to be unavailable."""
    if not enabled:
        return fn
    try:
        compiled = torch.compile(fn)
    except Exception as err:  # e.g. a platform or Python version without torch.compile
        _warn(what, err)
        return fn
    return _EagerFallback(fn, compiled, what)


def _warn(what: str, err: Exception) -> None:
    text = str(err).strip()
    reason = text.splitlines()[0] if text else type(err).__name__
    warnings.warn(f"torch.compile of {what} is unavailable ({reason}); running it eagerly", CompileUnavailableWarning)


class _EagerFallback:
    """The compiled callable until it fails to compile, the eager one from then on."""

    def __init__(self, eager: Callable, compiled: Callable, what: str):
        self.eager, self.compiled, self.what = eager, compiled, what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except TorchDynamoException as err:  # compiling failed (an error of fn itself recurs below)
                _warn(self.what, err)
                self.compiled = None
        return self.eager(*args, **kwargs)
