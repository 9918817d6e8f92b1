# `make demo`: set everything up and run the bundled demo.  `make test`: set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.transferkit-installed

.PHONY: setup browser speech demo lint test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[zoo,parquet,serve,explain,export,test]"
	touch $(STAMP)

setup: $(STAMP)

# The report's browser test needs Chromium: where it is missing and apt is there, install the Debian
# packages (with sudo when not root); otherwise say so, and that test skips naming the reason.
browser:
	@if { command -v chromium || command -v chromium-browser; } >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing Chromium for the report's browser test (apt-get install chromium chromium-driver)"; \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      chromium chromium-driver >/dev/null; } || echo "warning: Chromium could not be installed: the browser test will skip"; \
	else echo "note: no Chromium and no apt-get: the report's browser test will skip"; fi

# The audio tests and benchmark synthesise speech with espeak-ng and perturb it with sox: installed like
# Chromium above; where impossible the tests that need them skip, naming the reason.
speech:
	@if command -v espeak-ng >/dev/null 2>&1 && command -v sox >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing espeak-ng and sox for the audio tests (apt-get install espeak-ng sox)"; \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      espeak-ng sox >/dev/null; } || echo "warning: espeak-ng/sox could not be installed: the speech tests will skip"; \
	else echo "note: no espeak-ng/sox and no apt-get: the speech tests will skip"; fi

demo: setup
	$(BIN)/transferkit demo --out runs/demo

# ruff's rules and exceptions are in pyproject.toml ([tool.ruff]); `make test` runs it first.
lint: setup
	$(BIN)/ruff check .

test: setup browser speech lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -ra

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
