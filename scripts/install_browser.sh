#!/usr/bin/env bash
# What the real-browser test (tests/test_browser.py) needs beyond the notebooks extra:
# Debian's Chromium at /usr/bin/chromium and the Python Playwright package in the venv.
# Playwright drives that system Chromium (executable_path); it never downloads a browser of its
# own (`playwright install` is not run, and would fail offline).
#   usage: bash scripts/install_browser.sh [python]     (python defaults to .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
fi

if ! "$PY" -c "import playwright.sync_api" 2>/dev/null; then
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$PY" -m pip install --quiet "playwright>=1.40"
fi

/usr/bin/chromium --version
"$PY" -c "import playwright; from importlib.metadata import version; print('playwright', version('playwright'))"
