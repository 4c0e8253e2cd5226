# Every target installs what it needs into .venv first: a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test test-slow bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# The main job on the bundled SQLite sample: one poll pass, records to stdout and to a
# local SQLite call log. The demo state is reset first so that every run shows the records.
run: install
	mkdir -p .run && rm -f .run/celsync-state.sqlite .run/celsync-calls.sqlite
	$(BIN)/celsync --config config.yaml poll
	@echo
	$(BIN)/celsync --config config.yaml status

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .run .pytest_cache .hypothesis
