"""Shared test set-up: paths in params/ and notebooks are relative to the repository root; a free
local port for tests that start servers or process groups."""

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _run_from_repository_root():
    previous = Path.cwd()
    os.chdir(ROOT)
    yield
    os.chdir(previous)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def small_judge(monkeypatch):
    """The Shapes judge on the first 16 prompts of each prompt set: the same figures, a fraction of the
    images, for tests of the plumbing around it (the real-render reference is recomputed to match)."""
    from lafite_core import prompt_following as pf

    def first_prompts(prompts):
        return pf.PromptSet(prompts.form, prompts.split, prompts.named, prompts.prompts[:16], prompts.values[:16])

    full = pf.prompt_sets()
    monkeypatch.setattr(pf, "prompt_sets", lambda: [first_prompts(s) for s in full])
    pf.real_reference.cache_clear()
    yield
    pf.real_reference.cache_clear()
