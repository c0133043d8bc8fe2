# Every habit of the project. `make demo` and `make test` each build .venv first when needed.
# GPU users: make venv TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.saekit-installed
# Exact versions with hashes of everything `make venv` installs but torch and saekit (Linux, CPython 3.11).
LOCK := requirements.lock

.PHONY: venv lock test test-notebooks lint docs bench demo clean-venv browser-deps

venv: $(STAMP)

# torch first (TORCH_SPEC), then the lock exactly (--no-deps: the lock is the whole closure), then saekit itself
$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q --require-hashes --no-deps -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
	touch $@

# Regenerate $(LOCK) after adding or changing a dependency or an extra in pyproject.toml: `make lock`, then
# commit the lock. Pins already in the lock are kept (the demo's corpus reads some installed packages' files,
# saekit.embedded.installed.CORE_DISTRIBUTIONS: a changed version changes the corpus); `make lock
# LOCK_UPGRADE=--upgrade` moves everything to the newest allowed. LOCK_EXTRAS names the extras it covers
# (add a new extra here too). The lock is resolved against the CPU build of torch (LOCK_TORCH: found on this
# machine's wheel folder; elsewhere add LOCK_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu")
# and leaves torch itself out: `make venv` installs it first from TORCH_SPEC. pip-tools lives in its own venv.
LOCK_EXTRAS ?= notebooks,test,browser,autointerp,tracking,docs
LOCK_TORCH ?= torch==2.13.0+cpu
LOCK_PIP_ARGS ?=
LOCK_UPGRADE ?=
LOCK_VENV ?= .venv-lock
PIP_TOOLS_SPEC ?= pip-tools==7.6.2

lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q "$(PIP_TOOLS_SPEC)")
	echo "$(LOCK_TORCH)" > $(LOCK_VENV)/torch-constraint.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q --generate-hashes --strip-extras \
		--unsafe-package torch --no-emit-index-url --no-emit-find-links --extra $(LOCK_EXTRAS) \
		-c $(LOCK_VENV)/torch-constraint.txt $(LOCK_UPGRADE) $(LOCK_PIP_ARGS) -o $(LOCK) pyproject.toml

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

# the API reference (MkDocs + mkdocstrings), warnings as errors, into site/ (ignored)
docs: venv
	$(BIN)/mkdocs build --strict --quiet --site-dir site

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
