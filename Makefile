# qdrift: `make demo` and `make test` install whatever is missing, then run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CMAKE  := $(VENV)/bin/cmake
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := g++ libeigen3-dev xtensor-dev nlohmann-json3-dev doctest-dev
BUILD_TOOLS := "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
JOBS   ?= 2

.PHONY: help deps install test-deps test test-cpp test-python test-notebooks test-sanitizers demo bench clean

help:
	@echo "make demo   - install what is missing, then run the default experiment"
	@echo "make test   - install the test tools, then run C++ (ctest), Python (pytest) and notebook tests"
	@echo "make bench  - benchmarks against named peers (bench/)"

# Debian packages (C++ libraries) and a virtual environment with the build tools.
deps: $(VENV)/.deps-stamp
$(VENV)/.deps-stamp: Makefile
	@dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS); }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(BUILD_TOOLS) numpy
	@touch $@

# The package itself (incremental: scikit-build-core keeps build/<wheel tag>).
install: deps
	$(PIP) install -q --no-build-isolation .

test-deps: deps
	$(PIP) install -q pytest ml_dtypes torch==2.13.0 tensorflow-cpu==2.21.0 ai-edge-litert==2.3.0 nbclient nbformat ipykernel matplotlib \
	  pandas tqdm "dask[distributed]" scikit-learn jsonschema

demo: install
	$(PY) -m qdrift.demo

test: install test-deps test-cpp test-python test-notebooks

test-cpp: deps
	$(CMAKE) -S . -B build/cpp -G Ninja -DQDRIFT_WERROR=ON -DCMAKE_BUILD_TYPE=Release
	$(CMAKE) --build build/cpp -j $(JOBS)
	$(VENV)/bin/ctest --test-dir build/cpp --output-on-failure -j $(JOBS)

test-python: install test-deps
	$(PY) -m pytest tests/python -q -ra

test-notebooks: install test-deps
	$(PY) tests/run_notebooks.py notebooks

# C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer (run by .ci/run).
test-sanitizers: deps
	$(CMAKE) -S . -B build/asan -G Ninja -DQDRIFT_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DQDRIFT_SANITIZE=address,undefined
	$(CMAKE) --build build/asan -j $(JOBS)
	$(VENV)/bin/ctest --test-dir build/asan --output-on-failure -j $(JOBS)

bench: install test-deps
	$(PY) bench/run.py

clean:
	rm -rf build
