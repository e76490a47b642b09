# The two commands of the README. Both install what is missing first (tools/install.sh).
PY := $(or $(SOCO_VENV),.venv)/bin/python

.PHONY: install test test-all demo demo-quick

install:
	bash tools/install.sh

# Default suite: fast tests (slow ones are marked and skipped; `make test-all` runs them too).
test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m "slow or not slow"

# End-to-end demo on the embedded data: proposals -> SoCo pretraining -> conversion -> fine-tune.
demo: install
	$(PY) tools/demo.py

demo-quick: install
	$(PY) tools/demo.py --quick
