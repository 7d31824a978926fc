# cortexloop: `make run` runs the default simulated session; `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: pip takes the CPU build from local disk (a loose spec may pull a multi-GB CUDA build).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cortexloop run rigs/sim.toml
	# The report of the session just run: the newest directory in the rig's store_dir (sessions/).
	$(BIN)/cortexloop report "$$(ls -td sessions/*/ | head -n 1)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 4

clean:
	rm -rf $(VENV) *.egg-info
