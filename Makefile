# Every habit of the project. `make demo` and `make test` each build .venv first when needed.
# GPU users: make venv TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
EXTRAS ?= notebooks,test,browser,autointerp,tracking
STAMP := $(VENV)/.saekit-installed

.PHONY: venv test test-notebooks lint bench demo clean-venv browser-deps

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
	touch $@

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser of its own).
# Without root or apt the browser tests skip and say why.
browser-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) \
		|| echo "could not install chromium: the browser tests will be skipped"

test: venv browser-deps
	$(BIN)/python -m pytest -q tests

# only the notebooks, top to bottom against the quick demo (built first if missing: minutes)
test-notebooks: venv
	$(BIN)/python -m pytest -q tests/test_notebooks.py

lint: venv
	$(BIN)/ruff check .

# SAELens lives in its own venv so its pins never touch ours
SAELENS_VENV ?= .venv-saelens
SAELENS_SPEC ?= sae-lens==6.54.12

# EleutherAI's sparsify, likewise in its own venv
SPARSIFY_VENV ?= .venv-sparsify
SPARSIFY_SPEC ?= eai-sparsify==1.3.3

# a peer toolkit's venv: our torch first, then the pinned peer (PEER_SPEC per venv)
$(SAELENS_VENV)/.installed: PEER_SPEC = $(SAELENS_SPEC)
$(SPARSIFY_VENV)/.installed: PEER_SPEC = $(SPARSIFY_SPEC)
$(SAELENS_VENV)/.installed $(SPARSIFY_VENV)/.installed:
	test -x $(@D)/bin/python || $(PYTHON) -m venv $(@D)
	$(@D)/bin/pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(@D)/bin/pip install -q "$(PEER_SPEC)"
	touch $@

bench: venv $(SAELENS_VENV)/.installed $(SPARSIFY_VENV)/.installed
	SAELENS_PYTHON=$(abspath $(SAELENS_VENV))/bin/python SPARSIFY_PYTHON=$(abspath $(SPARSIFY_VENV))/bin/python \
		$(BIN)/python -m benchmarks.run

demo: venv
	$(BIN)/saekit demo --profile quick
	@echo "Open the notebooks with: $(BIN)/jupyter lab notebooks/"

clean-venv:
	rm -rf $(VENV)
