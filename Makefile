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

.PHONY: help deps install test-deps test test-cpp test-python test-notebooks test-sanitizers demo bench clean fuzz

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
	@$(PY) -c "import matplotlib" 2>/dev/null || $(PIP) install -q matplotlib   # the demo's plot
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

# libFuzzer (clang, ASan + UBSan) over the experiment config reader for a fixed budget, seeded
# with configs/ (run by .ci/run).
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v clang++ >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clang; }
	$(CMAKE) -S . -B build/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DQDRIFT_BUILD_FUZZ=ON -DQDRIFT_BUILD_TESTS=OFF -DQDRIFT_SANITIZE=address,undefined
	$(CMAKE) --build build/fuzz -j $(JOBS) --target fuzz_experiment
	mkdir -p build/fuzz/corpus && cp configs/*.json configs/quantizers/*.json build/fuzz/corpus/
	build/fuzz/tests/fuzz/fuzz_experiment -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	  -print_final_stats=1 -artifact_prefix=build/fuzz/ build/fuzz/corpus

bench: install test-deps
	$(PY) bench/run.py

clean:
	rm -rf build
