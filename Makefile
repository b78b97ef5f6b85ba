# jdct — everything a fresh machine needs goes through these targets.
#   make demo   set up, then convert example JPEGs, inspect, train briefly and evaluate
#   make test   set up, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JDCT := $(VENV)/bin/jdct
STAMP := $(VENV)/.installed
EXT_SOURCES := _decoder.pyx $(wildcard *.pxd)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZ_SECONDS ?= 600

.PHONY: setup build test demo bench fuzz clean help

help:
	@echo "make demo | make test | make bench | make fuzz FUZZ_SECONDS=600 | make clean"

# libjpeg-turbo headers: install Debian's package when jpeglib.h is missing.
.jpeg-headers:
	@if ! { pkg-config --exists libjpeg 2>/dev/null || [ -f /usr/include/jpeglib.h ] || [ -n "$$JDCT_LIBJPEG_PREFIX" ]; }; then \
	  echo "jpeglib.h missing: installing libjpeg62-turbo-dev"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libjpeg62-turbo-dev pkg-config; \
	fi
	@touch $@

$(STAMP): pyproject.toml setup.py .jpeg-headers
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[train,plot,dask,dev]"
	@touch $@

setup: $(STAMP) build

# Rebuild the extension in place whenever its Cython sources change.
build: $(STAMP)
	@$(PY) -c "import sys, pathlib, glob; so = glob.glob('jdct_cli/_decoder*.so'); src = [pathlib.Path(p).stat().st_mtime for p in sys.argv[1:]]; sys.exit(0 if so and pathlib.Path(so[0]).stat().st_mtime >= max(src) else 1)" $(EXT_SOURCES) \
	  || $(PY) setup.py -q build_ext --inplace

test: setup
	$(PY) -m pytest -q -ra tests

demo: setup
	$(PY) examples/demo.py

bench: setup
	$(PY) benchmarks/decoder.py
	$(PY) benchmarks/inference.py

# Fuzz the decoder for FUZZ_SECONDS, seeded with ../shared/data/odd-jpegs; corpus and findings in fuzz-out/.
fuzz: setup
	PYTHON=$(PY) tests/fuzz/run.sh $(FUZZ_SECONDS) fuzz-out ../shared/data/odd-jpegs

clean:
	rm -rf build *.egg-info jdct_cli/_decoder*.so _decoder.c demo-out .jpeg-headers
