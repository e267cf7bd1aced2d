# The README's two commands: `make demo` (the main job on the embedded default) and `make test`; and `make docs`,
# the user's guide in site/. All build the virtual environment `.venv` from nothing the first time.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# CPU TensorFlow by default; on a CUDA machine: make EXTRAS=gpu,test,docs,azure venv
EXTRAS ?= cpu,test,docs,azure
# Azurite, the Azure Storage emulator the Azure tests run against (npm, into .azurite/; tests/conftest.py starts it)
AZURITE_VERSION := 3.37.0
AZURITE_STAMP := .azurite/.installed-$(AZURITE_VERSION)
DEMO_DIR ?= demo-output

.PHONY: venv test lint demo docs clean azurite

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)

$(AZURITE_STAMP):
	npm install --no-save --no-audit --no-fund --loglevel=error --prefix .azurite azurite@$(AZURITE_VERSION)
	touch $@

azurite: $(AZURITE_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

# Without npm the Azure tests skip, saying why (under CI they fail: .ci/run installs Azurite first).
test: lint
	@$(MAKE) --no-print-directory azurite || echo "make: Azurite could not be installed (npm): the Azure tests will skip" >&2
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo --out $(DEMO_DIR)

# Strict: a broken link, a page missing from the navigation or an unresolved reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(DEMO_DIR) site .azurite
