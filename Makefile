# One command sets up and runs the main job, one sets up and runs the tests.
#   make sweep   -> venv + install + a small real sweep (search_spaces/quick.yaml)
#   make test    -> venv + install + lint (ruff check) + the test suite
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup sweep lint test bench browser

$(BIN)/python:
	$(PY) -m venv $(VENV)

# --no-compile: pip would byte-compile every installed module (torch, ray, mlflow, ...), about
# half the install time on 2 cores; Python compiles what is imported, once, on first use
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-compile --upgrade pip
	$(BIN)/pip install -q --no-compile $(TORCH)          # CPU build first: an unpinned torch pulls CUDA wheels
	$(BIN)/pip install -q --no-compile -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

browser:  # Debian's chromium for the HTML-front browser test (root only; skipped otherwise)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; } || true

sweep: setup
	$(BIN)/searchvlm sweep search_spaces/quick.yaml --name quick

lint: setup  # ruff: lint rules and the formatter (pyproject [tool.ruff]); `ruff format .` fixes the latter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup browser lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/step_time.py
