# One command sets up and runs the main job, one sets up and runs the tests.
#   make sweep   -> venv + install + a small real sweep of default.yaml and its decision
#   make test-fast -> venv + install + lint + the fast tier: every test that starts no sweep, no
#                     process and no torch.compile (under 2 minutes on 2 cores): run it on every change
#   make test    -> venv + install + lint (ruff check) + the docs site (strict) + the test suite
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup sweep lint docs test test-fast bench browser

$(BIN)/python:
	$(PY) -m venv $(VENV)

# --no-compile: pip byte-compiles every installed module one by one (about half the install time
# on 2 cores); compileall below does it on every core at once
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-compile --upgrade pip
	$(BIN)/pip install -q --no-compile $(TORCH)          # CPU build first: an unpinned torch pulls CUDA wheels
	$(BIN)/pip install -q --no-compile -e ".[dev]"
	@# then byte-compile once, on every core: where PYTHONDONTWRITEBYTECODE is set (this machine and CI)
	@# Python never caches what it compiles, so each process (every test, CLI run, Ray worker, MLflow
	@# server) compiled torch and transformers again, ~10 s each (benchmarks/bytecode_imports.sh).
	@# -x: torch's py312_intrinsics.py is written for 3.12 and never imported (the one file that fails)
	$(BIN)/python -m compileall -q -j 0 -x 'py312_intrinsics\.py$$' $(VENV)/lib
	touch $@

setup: $(VENV)/.installed

browser:  # Debian's chromium for the HTML-front browser test (root only; skipped otherwise)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; } || true

# the main job: a small sweep of the two-sided proxy (default.yaml; seed 0; two presets and one
# sampled policy besides dense), then `decide` races the cheapest of its front against dense on
# three fresh seeds. It ends with the verdict line (accepted / none qualifies / undetermined with
# the seeds a decision needs) and where decision.json is. Run again, it resumes both (nothing retrained).
MAIN_SWEEP := --name main --samples 4 --set 'seeds=[0]' --set 'presets=[dense, himix_hmgen_partial, himix]'
sweep: setup
	$(BIN)/searchvlm sweep search_spaces/default.yaml $(MAIN_SWEEP) $$(test -d runs/main && echo --resume)
	$(BIN)/searchvlm decide main --shortlist 1 --first-seeds 3 --max-seeds 3 --jobs 2

lint: setup  # ruff: lint rules and the formatter (pyproject [tool.ruff]); `ruff format .` fixes the latter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the manual as a site (mkdocs.yml): strict, so a broken link or anchor, or a nav entry without
# its page, fails; nothing is fetched (no remote fonts, no social cards). Output: build/site (ignored)
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

# -n 2 --dist loadfile: two workers, each test file on one (its module and session fixtures,
# a real sweep among them, run once); Ray-starting tests may then run two local Rays at once
test: setup browser lint docs
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=25  # the 25 slowest tests in the log

# the fast tier (tests/conftest.py's --fast): leaves out the tests marked slow, sweep, multiprocess
# or compile (pyproject's markers; a test that starts one of those unmarked fails, in every tier)
test-fast: setup lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --fast --durations=10

bench: setup
	$(BIN)/python benchmarks/step_time.py
