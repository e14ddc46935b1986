# The kit's two commands (see README): `make demo` runs the main job, `make test` the test suite.
# Both create .venv with python3.11 and install the kit first if needed.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install clean-venv

demo: $(STAMP)
	$(PY) -m lafite_core.demo

# Lint and format check first (ruff, configured in pyproject.toml), then the tests. The browser test needs Debian's
# Chromium and the Fashion-MNIST reader's test Debian's dataset-fashion-mnist: installed when we may (root or
# sudo), else those tests skip.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/install_browser.sh $(PY) || echo "note: Chromium not installed; the browser test will skip"
	bash scripts/install_test_data.sh || echo "note: dataset-fashion-mnist not installed; its reader's test will skip"
	$(PY) -m pytest -q

# The inner loop: lint and every test not marked slow (no kernels, pipelines or extra processes).
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -m "not slow"

install: $(STAMP)

# torch is pinned and installed first, from the CPU/CUDA wheel pip finds for this machine;
# the kit itself then installs with its notebook and test extras.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[notebooks,test,ray]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
