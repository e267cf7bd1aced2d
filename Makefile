# The README's two commands: `make demo` (the main job on the embedded default) and `make test`; and `make docs`,
# the user's guide in site/. All build the virtual environment `.venv` from nothing the first time.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# CPU TensorFlow by default; on a CUDA machine: make EXTRAS=gpu,test,docs venv
EXTRAS ?= cpu,test,docs
DEMO_DIR ?= demo-output

.PHONY: venv test lint demo docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest

demo: $(STAMP)
	$(BIN)/python -m pipeline.demo --out $(DEMO_DIR)

# Strict: a broken link, a page missing from the navigation or an unresolved reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(DEMO_DIR) site
