"""The kit's progress bars: tqdm's text bar, shown where people look.

Outside Jupyter the bar is tqdm's, on stderr. In a Jupyter kernel (JupyterLab, papermill, the
runner's kernels) a bar writes to two places instead:
- the notebook: one output, updated in place, so a saved notebook holds the bar's last state once
  (a stream output would keep every refresh: thousands of outputs for one embedding), and never a
  widget, whose state papermill does not keep;
- the kernel's terminal: a full line (count, rate, ETA) every TERMINAL_EVERY seconds and at the
  end, so plain `papermill` shows progress, and the runner's log.txt (the kernel's terminal) and
  its one line per run have it too.
The runner sets TQDM_MININTERVAL for its kernels, so the notebook output is redrawn every few
seconds rather than ten times a second.
"""

from __future__ import annotations

import functools
import io
import math
import re
import sys
import time
from typing import Callable, TextIO

from tqdm.std import tqdm as _text_tqdm

__all__ = ["KernelProgress", "tqdm"]

TERMINAL_EVERY = 10.0  # seconds between a kernel bar's lines in its terminal


class KernelProgress:
    """The file a bar in a kernel writes to: its latest state goes to `show` (the notebook output)
    and, as a line, to `terminal` every `every` seconds and when the bar closes."""

    encoding = "utf-8"

    def __init__(self, show: Callable[[str], None], terminal: TextIO, every: float = TERMINAL_EVERY):
        self.show, self.terminal, self.every = show, terminal, every
        self.state, self.printed, self.printed_at = "", "", -math.inf

    def write(self, text: str) -> None:
        parts = [p.strip() for p in re.split(r"[\r\n]", text) if p.strip()]
        if parts and parts[-1] != self.state:
            self.state = parts[-1]
            self.show(self.state)
        if self.state and ("\n" in text or time.monotonic() - self.printed_at >= self.every):
            self._print()

    def _print(self) -> None:
        if self.state != self.printed:
            self.terminal.write(self.state + "\n")
            self.terminal.flush()
            self.printed, self.printed_at = self.state, time.monotonic()

    def flush(self) -> None:
        pass


class tqdm(_text_tqdm):
    """tqdm's text bar; in a Jupyter kernel, one updated notebook output and terminal lines."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("file") is None and not kwargs.get("disable") and _in_kernel():
            kwargs["file"] = KernelProgress(_notebook_output(), _kernel_terminal())
        if isinstance(kwargs.get("file"), KernelProgress):
            kwargs["leave"] = True  # the notebook keeps the last state, and the terminal its last line
        super().__init__(*args, **kwargs)


def _in_kernel() -> bool:
    outstream = getattr(sys.modules.get("ipykernel.iostream"), "OutStream", None)
    return outstream is not None and isinstance(sys.stderr, outstream)


def _notebook_output() -> Callable[[str], None]:
    """A function that shows a text as one notebook output, replacing what it showed before."""
    from IPython.display import display

    handle = display({"text/plain": ""}, raw=True, display_id=True)
    return lambda text: handle.update({"text/plain": text}, raw=True)


@functools.cache
def _kernel_terminal() -> TextIO:
    """The terminal the kernel was started from: ipykernel sends its stderr to the notebook and
    keeps the original file descriptor as the stream's fileno()."""
    try:
        return open(sys.stderr.fileno(), "w", buffering=1, closefd=False)
    except (AttributeError, OSError, io.UnsupportedOperation):
        return sys.__stderr__
