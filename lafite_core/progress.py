"""The kit's progress bars: tqdm's text bar everywhere, notebooks included.

A notebook widget bar (tqdm.auto's choice in Jupyter) is saved as a widget whose state papermill
does not keep, so a finished notebook would show it at "0%", and it never reaches the runner's
log.txt. The text bar is a stream: the log receives it as it runs, and a saved notebook shows its
last state. The runner sets TQDM_MININTERVAL for its kernels, so a log gets a line every few seconds
rather than ten a second.
"""

from tqdm.std import tqdm

__all__ = ["tqdm"]
