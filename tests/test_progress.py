"""The kit's progress bars in a Jupyter kernel: one notebook output holding the last state, and
terminal lines with count, rate and ETA (a real kernel: test_notebooks_data.py)."""

from __future__ import annotations

import io

from lafite_core.progress import KernelProgress, tqdm


def test_a_kernel_bar_keeps_one_final_state_and_prints_lines_with_rate_and_eta():
    shown, terminal = [], io.StringIO()
    every_write = KernelProgress(shown.append, terminal, every=0.0)
    with tqdm(total=50, desc="embedding", unit="img", file=every_write, mininterval=0) as bar:
        for _ in range(50):
            bar.update(1)
    assert len(shown) > 10 and shown[-1].startswith("embedding: 100%") and "50/50" in shown[-1]
    lines = terminal.getvalue().splitlines()
    assert lines[-1] == shown[-1] and len(lines) == len(set(lines))  # the final state, each line once
    assert all("img/s" in line and "<" in line for line in lines[1:])  # rate and elapsed<ETA

    quiet = io.StringIO()
    rare = KernelProgress(shown.append, quiet, every=3600.0)
    with tqdm(total=5, desc="pre-training", unit="step", file=rare, mininterval=0, leave=False) as bar:
        for _ in range(5):
            bar.update(1)
    assert quiet.getvalue().splitlines()[-1].startswith("pre-training: 100%")  # the end is always printed
    assert len(quiet.getvalue().splitlines()) == 2  # the start and the end, nothing between


def test_outside_a_kernel_the_bar_is_tqdms_text_bar():
    out = io.StringIO()
    with tqdm(total=2, file=out, mininterval=0) as bar:
        bar.update(2)
    assert "2/2" in out.getvalue()
