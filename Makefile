# `make demo` and `make test` bootstrap .venv themselves on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The sample service's old release (alpha) runs in a rolling-upgrade test with
# the old libraries too: .venv-alpha holds this repo on the OpenStack 2025.2
# oslo.* set pinned in $(ALPHA_CONSTRAINTS).
ALPHA_VENV := .venv-alpha
ALPHA_BIN := $(ALPHA_VENV)/bin
ALPHA_STAMP := $(ALPHA_VENV)/.installed
ALPHA_CONSTRAINTS := requirements/alpha-libraries.txt

.PHONY: demo test soak lint format bench clean alpha-venv docs

$(STAMP): setup.cfg pyproject.toml demo/setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e ./demo
	touch $(STAMP)

alpha-venv: $(ALPHA_STAMP)

$(ALPHA_STAMP): setup.cfg pyproject.toml demo/setup.cfg $(ALPHA_CONSTRAINTS)
	$(PYTHON) -m venv $(ALPHA_VENV)
	$(ALPHA_BIN)/pip install --quiet --upgrade pip
	$(ALPHA_BIN)/pip install --quiet -c $(ALPHA_CONSTRAINTS) -e '.[mysql,postgresql]' -e ./demo
	touch $(ALPHA_STAMP)

demo: $(STAMP)
	$(BIN)/rpccompat-demo

test: $(STAMP) $(ALPHA_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) docs
	$(BIN)/pytest -n 2 -q

# The documentation, warnings as errors: doc/build/html/index.html.
docs: $(STAMP)
	$(BIN)/sphinx-build -q -W --keep-going -b html doc/source doc/build/html

# The mixed-period model test's long profile: SOAK_SEEDS seeded sequences per
# change shape and backend; prints how many sequences and steps it checked.
SOAK_SEEDS ?= 50
soak: $(STAMP)
	RPCCOMPAT_SOAK=$(SOAK_SEEDS) $(BIN)/pytest -q -s -p no:xdist tests/db/test_mixed_period.py

# The quick figures first; db_migration (1,000,000 rows) takes the most time.
bench: $(STAMP)
	$(BIN)/python benchmarks/object_backport.py
	$(BIN)/python benchmarks/rpc_round_trip.py
	$(BIN)/python benchmarks/triggered_writes.py
	$(BIN)/python benchmarks/pins_lift.py
	$(BIN)/python benchmarks/db_migration.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(ALPHA_VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache doc/build
