# jdct — everything a fresh machine needs goes through these targets.
#   make demo     set up, then convert example JPEGs, inspect, train briefly and evaluate
#   make test     set up, then run the test suite
#   make check-c  compile the C layer (csrc/) with -Wall -Wextra -Werror
#   make asan     the C layer and the decoder tests under AddressSanitizer + UBSan
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JDCT := $(VENV)/bin/jdct
STAMP := $(VENV)/.installed
EXT_SOURCES := _decoder.pyx $(wildcard *.pxd) $(wildcard csrc/*.c csrc/*.h)
CC ?= cc
JPEG_CFLAGS = $(shell pkg-config --cflags libjpeg 2>/dev/null)
JPEG_LIBS = $(or $(shell pkg-config --libs libjpeg 2>/dev/null),-ljpeg)
C_WARNINGS := -std=c99 -Wall -Wextra -Wpedantic -Werror
SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1
# the decoder tests that run under the sanitizers (test_hostile limits address space: not with ASan)
ASAN_TESTS := tests/test_decoder.py tests/test_decoder_rects.py tests/test_decoder_write.py tests/test_jpeg.py \
	tests/test_regressions.py tests/test_decoder_odd.py \
	tests/test_inspect_cli.py
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZ_SECONDS ?= 600

.PHONY: setup build test demo bench fuzz check-c asan clean help

help:
	@echo "make demo | make test | make bench | make fuzz FUZZ_SECONDS=600 | make check-c | make asan | make clean"

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
	$(PY) -m pip install -q $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))")
	@touch $@

setup: $(STAMP) build

# Rebuild the extension in place whenever its sources (Cython binding, C layer) change; the build
# requirements (Cython...) are in the venv for this.
build: $(STAMP)
	@$(PY) -c "import sys, pathlib, glob; so = glob.glob('jdct_cli/_decoder*.so'); src = [pathlib.Path(p).stat().st_mtime for p in sys.argv[1:]]; sys.exit(0 if so and pathlib.Path(so[0]).stat().st_mtime >= max(src) else 1)" $(EXT_SOURCES) \
	  || $(PY) setup.py -q build_ext --inplace

test: setup
	$(PY) -m pytest -q -ra --durations=25 tests

demo: setup
	$(PY) examples/demo.py

bench: setup
	$(PY) benchmarks/decoder.py
	$(PY) benchmarks/inference.py

# Fuzz the decoder for FUZZ_SECONDS, seeded with ../shared/data/odd-jpegs; corpus and findings in fuzz-out/.
fuzz: setup
	PYTHON=$(PY) tests/fuzz/run.sh $(FUZZ_SECONDS) fuzz-out ../shared/data/odd-jpegs

# The C layer compiles warning-free: every csrc/*.c and the sanitizer harness with -Werror.
check-c: .jpeg-headers
	@mkdir -p build/check-c
	@for f in csrc/*.c tests/csrc/harness.c; do \
	  echo "$(CC) $(C_WARNINGS) -c $$f"; \
	  $(CC) $(C_WARNINGS) -O2 -Icsrc $(JPEG_CFLAGS) -c $$f -o build/check-c/$$(basename $$f .c).o || exit 1; \
	done

# AddressSanitizer + UndefinedBehaviorSanitizer (any finding aborts): (1) tests/csrc/harness.c runs
# every csrc/ function over the committed fixtures, the fuzz regressions and ../shared's odd JPEGs,
# leak detection on; (2) the decoder tests against a sanitized build of the extension (an
# instrumented copy of the package under build/asan/pkg, run from build/asan so that it is the
# one imported, child processes included; leak detection off: CPython itself never frees all).
asan: setup check-c
	@mkdir -p build/asan
	$(CC) $(C_WARNINGS) $(SANITIZE) -pthread -Icsrc $(JPEG_CFLAGS) tests/csrc/harness.c csrc/*.c $(JPEG_LIBS) -lm \
	  -o build/asan/harness
	find tests/data/jpegs tests/regressions $(wildcard ../shared/data/odd-jpegs) -type f -name '*.*' -print0 \
	  | xargs -0 build/asan/harness
	rm -rf build/asan/pkg && mkdir -p build/asan/pkg && cp -r jdct_cli build/asan/pkg/ \
	  && rm -f build/asan/pkg/jdct_cli/_decoder*.so
	JDCT_CFLAGS="$(SANITIZE)" $(PY) setup.py -q build_ext --force --build-lib build/asan/pkg --build-temp build/asan/tmp
	cd build/asan && export LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0 PYTHONPATH=$(CURDIR)/build/asan/pkg \
	  && $(CURDIR)/$(PY) -c "import jdct_cli._decoder as d; assert '/build/asan/' in d.__file__, d.__file__" \
	  && $(CURDIR)/$(VENV)/bin/pytest -q -p no:cacheprovider --rootdir=$(CURDIR) $(addprefix $(CURDIR)/,$(ASAN_TESTS))

clean:
	rm -rf build *.egg-info jdct_cli/_decoder*.so _decoder.c demo-out .jpeg-headers
