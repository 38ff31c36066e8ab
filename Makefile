# Two commands do all set-up on a fresh machine:
#   make demo   install everything, then run the main job (render, train, analyse, report)
#   make test   install everything, then run the test suite
# bpy and torch never share a process, so the Blender tests run in their own pytest process.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.carprobe-installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[blender,analysis,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/carprobe demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/blender
	$(PY) -m pytest tests/blender

clean:
	rm -rf out .pytest_cache
