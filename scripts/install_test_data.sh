#!/usr/bin/env bash
# Real images for the test suite: Debian's dataset-fashion-mnist (IDX files in
# /usr/share/datasets/fashion-mnist), read by the Fashion-MNIST reader's test
# (tests/test_readers.py::test_fashion_mnist_debian_package), which skips without it.
# Installed when we may (root or sudo), as scripts/install_browser.sh does for Chromium.
#   usage: bash scripts/install_test_data.sh
set -euo pipefail
ROOT=/usr/share/datasets/fashion-mnist

if [ ! -d "$ROOT" ]; then
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist
fi
ls "$ROOT"
