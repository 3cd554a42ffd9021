# One-command set-up: `make demo` and `make test` create .venv and install the project on first use.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint docs bench lab clean-runs

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The documentation site (docs/, mkdocs.yml) into site/, offline; --strict: a broken link, anchor or
# API reference, or a page that would load something from the internet, fails the build.
DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,docs]'
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# pytest exits 5 when it collected nothing: an empty selection must fail, not pass.
test: lint docs
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: $(STAMP)
	$(PY) -m bnext.demo

bench: $(STAMP)
	$(PY) benchmarks/landscape_speed.py
	$(PY) benchmarks/packed_speed.py

# The notebooks name the kernel `python3`; registering this venv under that name inside the venv
# (--sys-prefix) makes JupyterLab and papermill (CI, python -m bnext.ablate) run the same interpreter.
# JupyterLab opens at the repository root: notebooks/, runs/ and configs/ are all in its file browser.
# As root (containers, clusters) it adds --allow-root; LAB_ARGS passes more, e.g.
#   make lab LAB_ARGS="--no-browser --ip=0.0.0.0 --port=8890"
LAB_ARGS ?=
lab: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,lab]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (BNext workbench)"
	@mkdir -p runs
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(LAB_ARGS)

clean-runs:
	rm -rf runs/*/
