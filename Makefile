# fvcflow: `make demo` runs the main job on the built-in demo corpus, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FVC_HOME ?= $(CURDIR)/fvc-data
export FVC_HOME
# No command started here puts the repository root (or a script's folder) first on sys.path: our
# top-level kernels/ and flows/ (installed as fvcflow.kernels and fvcflow.flows) must never hide a
# package of those names (transformers imports Hugging Face's `kernels`). The venv's
# fvcflow-dev-tree.pth puts the root *after* site-packages, for tests/ and benchmarks/ only.
export PYTHONSAFEPATH := 1

.PHONY: install lint test test-fast demo down bench clean

# The venv is made once; torch comes first from this machine's disk (pip's constraint caps it).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip setuptools wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	echo "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/fvcflow-dev-tree.pth"
	touch $@

install: $(VENV)/.installed

# ruff (configured in pyproject.toml: E, F, W, I; 110 columns) runs before every test run
lint: install
	$(PY) -m ruff check .

# two test processes, each taking whole files (a file's module fixtures are built once)
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25

test: lint
	$(PYTEST)

test-fast: lint
	$(PYTEST) -m "not slow"

demo: install
	VENV=$(VENV) bash deployments/demo.sh

down:
	VENV=$(VENV) bash deployments/demo.sh down

bench: install
	for b in kernels local video ingest augment_memory pipeline train soak demo_separability evidence demo deep; do \
		$(PY) -m benchmarks.$$b || exit 1; done

clean: down
	rm -rf $(FVC_HOME)
