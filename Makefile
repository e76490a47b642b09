# The two commands of the README. Both install what is missing first (tools/install.sh).
# D2_SRC=PATH (a Detectron2 checkout) installs the official Detectron2 build from it into a
# separate venv, .venv-d2src (SOCO_VENV overrides either venv), and runs there:
#   make test D2_SRC=../detectron2
D2_SRC ?=
VENV := $(or $(SOCO_VENV),$(if $(D2_SRC),.venv-d2src,.venv))
PY := $(VENV)/bin/python
INSTALL := bash tools/install.sh --venv $(abspath $(VENV))$(if $(D2_SRC), --detectron2-src $(abspath $(D2_SRC)))

.PHONY: install test test-all demo demo-quick

install:
	$(INSTALL)

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
