"""The sampling notebook in a real browser: JupyterLab on localhost, headless Chromium driven by
Playwright, run all cells, type a prompt, press Enter, see the grid.

Needs Debian's chromium (/usr/bin/chromium) and the Python playwright package; without them it
skips and says so (`bash scripts/install_browser.sh` installs both; Playwright is pointed at that
Chromium and never downloads a browser of its own). JupyterLab comes with the notebooks extra.
JupyterLab's autosave is turned off (a settings folder of the test's own), and the test checks
that the committed notebook is byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "05_sample.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
SERVER_START_S = 60
LAB_LOAD_MS = 60_000
KERNEL_MS = 60_000
CELLS_MS = 90_000  # all cells (imports torch and open_clip, loads the generator)
GENERATE_MS = 30_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # JupyterLab in headless Chromium


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found (install: bash scripts/install_browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python package playwright not installed (install: bash scripts/install_browser.sh)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab not installed (pip install -e '.[notebooks]')"
    return None


@pytest.fixture
def lab(tmp_path, free_port):
    """A JupyterLab server on a free localhost port, no token, rooted at the repository."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    settings = tmp_path / "lab-settings" / "@jupyterlab"
    for plugin, values in {
        "docmanager-extension/plugin": {"autosave": False},
        "apputils-extension/notification": {"fetchNews": "false"},
        "notebook-extension/tracker": {"autoStartDefaultKernel": True},
    }.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{plugin}.jupyterlab-settings").write_text(json.dumps(values))
    port = free_port
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "CUDA_VISIBLE_DEVICES": "",
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={REPO}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(
                    f"JupyterLab did not start in {SERVER_START_S} s:\n"
                    + (tmp_path / "jupyterlab.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_prompt_and_enter_in_jupyterlab_shows_the_grid(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    committed = NOTEBOOK.read_bytes()
    shot = tmp_path / "05_sample.png"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            try:
                page.goto(f"{lab}/lab/tree/notebooks/05_sample.ipynb", timeout=LAB_LOAD_MS)
                page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=LAB_LOAD_MS)
                _run_all_cells(page, lab)
                prompt = page.locator(".jp-OutputArea .widget-text input").first
                prompt.wait_for(timeout=CELLS_MS)
                prompt.fill("a red star")
                prompt.press("Enter")  # Enter generates, as the Generate button does
                page.wait_for_function(
                    """() => [...document.querySelectorAll('.jp-OutputArea img.widget-image')]
                              .some(img => img.complete && img.naturalWidth > 0)""",
                    timeout=GENERATE_MS,
                )
                status = page.locator(".jp-OutputArea .widget-html-content", has_text="images in").first
                status.wait_for(timeout=GENERATE_MS)
                page.locator(".jp-OutputArea img.widget-image").first.scroll_into_view_if_needed()
                page.screenshot(path=str(shot))
                text = status.inner_text()
                caption = page.locator(".jp-OutputArea .widget-html-content", has_text="seeds 0..7").first
                caption.wait_for(timeout=GENERATE_MS)
                label = caption.inner_text()
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"))  # what the page showed when a wait ran out
                raise
            finally:
                browser.close()
    finally:
        if NOTEBOOK.read_bytes() != committed:  # never leave outputs in the committed notebook
            NOTEBOOK.write_bytes(committed)
            pytest.fail("JupyterLab wrote to the committed notebook (autosave should be off)")
    assert "8 images in" in text and "a red star" in label  # the grid is labelled with its prompt
    assert shot.stat().st_size > 0
    if os.environ.get("LAFITE_BROWSER_SHOT"):
        shutil.copy(shot, os.environ["LAFITE_BROWSER_SHOT"])


def _run_all_cells(page, lab: str) -> None:
    """Run > Run All Cells from the menu bar, once the notebook's kernel is started and connected
    (the server's /api/sessions says so; cells sent while it is still connecting can be lost)."""
    deadline = time.time() + KERNEL_MS / 1000
    while not _kernel_ready(lab):
        select = page.locator(".jp-Dialog button", has_text="Select")  # the kernel chooser, if asked
        if select.count():
            select.first.click()
        if time.time() > deadline:
            raise TimeoutError(f"the notebook's kernel was not idle and connected after {KERNEL_MS // 1000} s")
        page.wait_for_timeout(500)
    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()


def _kernel_ready(lab: str) -> bool:
    with urllib.request.urlopen(f"{lab}/api/sessions", timeout=5) as response:
        sessions = json.loads(response.read())
    return any(
        s["path"].endswith(NOTEBOOK.name)
        and s["kernel"]["execution_state"] == "idle"
        and s["kernel"].get("connections", 0) >= 1
        for s in sessions
    )
