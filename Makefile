# tickray: the two commands a newcomer runs are `make demo` and `make test`.
# Every target creates .venv and installs the project (editable, with dev extras) when missing.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TYPECHECK := .typecheck

.PHONY: demo test lint format typecheck bench clean install FORCE

FORCE:

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "tickray needs Python >= 3.11, found " + sys.version.split()[0]'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tickray backtest --demo

# mypy cannot follow setuptools' editable import hooks, so it checks a tree of
# links laid out exactly as the installed package (tickray/engine -> ../engine).
$(TYPECHECK): $(STAMP) FORCE
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/tickray
	for f in tickray/*.py tickray/py.typed; do ln -s ../../$$f $(TYPECHECK)/tickray/; done
	for p in engine actors feeds risk cluster; do ln -s ../../$$p $(TYPECHECK)/tickray/$$p; done

typecheck: $(TYPECHECK)
	cd $(TYPECHECK) && ../$(VENV)/bin/mypy --config-file ../pyproject.toml --strict -p tickray.engine -p tickray.risk
	cd $(TYPECHECK) && ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p tickray

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck
	cd $(TYPECHECK) && PYTHONPATH=. ../$(VENV)/bin/lint-imports --config ../pyproject.toml

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(STAMP) lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(TYPECHECK) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
