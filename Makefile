# The two commands a newcomer runs: `make demo` (the whole job on real data) and `make test`.
# Both create .venv and install the package into it when missing; re-runs are fast.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1

DEMO_DIR ?= runs/demo

.PHONY: demo test test-fast lint format install clean browser

# LightFM 1.17 (a peer, ssl_retrieval/evaluation/peers.py) is a source distribution whose
# setup.py only builds the old way (`setup.py bdist_wheel`, needs wheel and setuptools): under
# PEP 517 it stops at "getting requirements to build wheel" (lyst/lightfm#725), and pip 25.3
# removed the old way. So pip stays at 25.2, and LightFM (a C compiler needed) comes first.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet 'pip==25.2' wheel setuptools
	$(PY) -m pip install --quiet 'lightfm==1.17'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh $(DEMO_DIR)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# The page's browser test needs chromium + chromium-driver: installed here when root, else skipped.
browser:
	bash scripts/install_browser.sh

# One test process per core (pytest-xdist): each builds the shared tiny models it needs once.
test: lint browser
	$(PY) -m pytest -q -ra -n auto --durations=15

test-fast: lint
	$(PY) -m pytest -q -n auto -m "not slow"

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
